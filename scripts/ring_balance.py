#!/usr/bin/env python3
"""Balance of the ring (hash contract v1): the share of key space each backend owns.

Uses the reference implementation in scripts/ring_vectors.py. For N equal backends named
like the ids operators use, prints the most and least loaded backend's share relative
to the mean (1.00 = perfect), for several vnodes values.

    pip install xxhash && python3 scripts/ring_balance.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ring_vectors import build  # noqa: E402

SCHEMES = {
    "addresses": lambda i: f"10.0.{i // 256}.{i % 256}:8080",
    "names": lambda i: f"app-{i + 1}",
}


def shares(points, ids):
    owned = {b: 0 for b in ids}
    n = len(points)
    for i, (h, bid) in enumerate(points):
        prev = points[i - 1][0]
        owned[bid] += (h - prev) % (1 << 64) if n > 1 else (1 << 64)
    return [owned[b] / (1 << 64) for b in ids]


def main():
    print(f"{'backends':>8} {'vnodes':>6} {'ids':>9} {'max/mean':>9} {'min/mean':>9}")
    for n in (3, 10, 100):
        for v in (160, 1024):
            for name, fmt in SCHEMES.items():
                ids = [fmt(i) for i in range(n)]
                s = shares(build([(b, 1) for b in ids], v), ids)
                mean = 1 / n
                print(f"{n:>8} {v:>6} {name:>9} {max(s) / mean:>9.3f} {min(s) / mean:>9.3f}")


if __name__ == "__main__":
    main()
