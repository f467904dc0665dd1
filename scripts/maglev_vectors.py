#!/usr/bin/env python3
"""Reference implementation of ringway's Maglev table (docs/hashing.md, "Maglev table"),
version 1.

Writes tests/fixtures/maglev_vectors.tsv. Written from the prose of docs/hashing.md, not
from the Rust code, with the `xxhash` package from PyPI (bindings to the C reference
xxHash) for XXH3-64, so the vectors check the Rust implementation against an
independent one.

    pip install xxhash && python3 scripts/maglev_vectors.py > tests/fixtures/maglev_vectors.tsv
"""
import random

import xxhash


def h(s: str) -> int:
    return xxhash.xxh3_64_intdigest(s.encode(), seed=0)


def is_prime(m: int) -> bool:
    if m < 2:
        return False
    d = 2
    while d * d <= m:
        if m % d == 0:
            return False
        d += 1
    return True


def table_size(n: int) -> int:
    m = max(65537, 100 * n)
    while not is_prime(m):
        m += 1
    return m


def build(backends, live, m):
    """backends: [(id, weight)] of the whole pool; live: ids in use."""
    order = sorted((b for b in backends if b[0] in live), key=lambda b: b[0].encode())
    if not order:
        return []
    perm = [(h(f"{i}#offset") % m, h(f"{i}#skip") % (m - 1) + 1) for i, _ in order]
    nxt = [0] * len(order)
    entries = [None] * m
    filled = 0
    while True:
        for k, (bid, w) in enumerate(order):
            offset, skip = perm[k]
            for _ in range(w):
                while True:
                    c = (offset + nxt[k] * skip) % m
                    nxt[k] += 1
                    if entries[c] is None:
                        entries[c] = bid
                        filled += 1
                        break
                if filled == m:
                    return entries


def main():
    rng = random.Random(20261207)
    print("# ringway Maglev table vectors, version 1 (scripts/maglev_vectors.py)")
    print("# size\tbackends\tM")
    for n in [1, 10, 655, 656, 1000, 4000]:
        print(f"size\t{n}\t{table_size(n)}")
    print("# perm\tid\tM\toffset\tskip")
    for bid in ["a", "app-1", "127.0.0.1:9001", "[::1]:9003", "db-1.internal:5432"]:
        m = 65537
        print(f"perm\t{bid}\t{m}\t{h(f'{bid}#offset') % m}\t{h(f'{bid}#skip') % (m - 1) + 1}")
    print("# table\tname\tM\tid=weight;...\tlive ids (, separated) or * for all")
    print("# lookup\ttable\tkey (hex)\tbackend id or -")
    tables = {
        "three": ([("a", 1), ("b", 1), ("c", 1)], None),
        "weighted": ([("app-1", 3), ("app-2", 1), ("app-3", 2), ("127.0.0.1:9001", 1)], None),
        "one-down": ([("a", 1), ("b", 1), ("c", 1), ("d", 1)], ["a", "b", "d"]),
        "none-live": ([("a", 1), ("b", 1)], []),
    }
    for name, (backends, live) in tables.items():
        m = table_size(len(backends))
        ids = [b for b, _ in backends] if live is None else live
        entries = build(backends, set(ids), m)
        members = ";".join(f"{b}={w}" for b, w in backends)
        live_text = "*" if live is None else ",".join(live)
        print(f"table\t{name}\t{m}\t{members}\t{live_text}")
        for _ in range(40):
            key = rng.getrandbits(64)
            got = entries[key % m] if entries else "-"
            print(f"lookup\t{name}\t{key:016x}\t{got}")
        # Every entry's owner counted: the shares.
        if entries:
            counts = {b: entries.count(b) for b, _ in backends}
            print(f"count\t{name}\t" + ";".join(f"{b}={c}" for b, c in counts.items()))


if __name__ == "__main__":
    main()
