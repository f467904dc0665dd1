#!/usr/bin/env python3
"""What a flood from countless sources costs ringway's memory (issue 11).

Starts ringway (release build) with one UDP listener in front of a local UDP echo
backend, with per-source limits set (so every source gets an entry in the listener's
source table) and `source_table_size` as given, then sends one datagram from each of N
distinct source addresses (127.x.y.z: all local, no spoofing needed). Prints ringway's
resident memory (VmRSS) and the table's size (/status `sources_tracked`) as the flood
goes on, and the same flood against a listener without per-source limits, so the
table's own cost stands apart from the flow table's.

    python3 scripts/source_flood.py [--sources 200000] [--table 65536]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def echo_backend(stop):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)

    def run():
        while not stop.is_set():
            try:
                data, peer = s.recvfrom(2048)
                s.sendto(data, peer)
            except socket.timeout:
                pass
            except OSError:
                pass

    threading.Thread(target=run, daemon=True).start()
    return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tracked(admin):
    with urllib.request.urlopen(f"http://{admin}/status", timeout=5) as r:
        return json.load(r)["listeners"][0]["sources_tracked"]


def flood(binary, sources, table, limited):
    stop = threading.Event()
    backend = echo_backend(stop)
    listen = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    admin = f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"
    limits = (
        f'udp_max_flows_per_source = 4\nudp_flow_rate_per_source = "10/s"\n'
        f"source_table_size = {table}\n"
        if limited
        else ""
    )
    conf = (
        f'workers = 2\n[admin]\nlisten = "{admin}"\n'
        f'[[listener]]\nname = "flood"\nprotocol = "udp"\nlisten = "{listen}"\n'
        f'udp_responses = 1\nudp_max_flows = 10000\n{limits}'
        f'[listener.health]\ncheck = "none"\n'
        f'[[listener.backend]]\naddress = "127.0.0.1:{backend}"\n'
    )
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(conf)
        path = f.name
    proc = subprocess.Popen(
        [binary, "run", "-c", path, "--log-level", "error"],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 10
        while True:
            try:
                tracked(admin)
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("ringway did not start")
                time.sleep(0.05)
        host, port = listen.split(":")
        target = (host, int(port))
        label = f"table {table}" if limited else "no per-source limits"
        print(f"-- {label}: {sources} sources, one datagram each")
        print(f"{'sources sent':>14} {'RSS MiB':>9} {'sources tracked':>16}")
        print(f"{0:>14} {rss_kib(proc.pid) / 1024:>9.1f} {tracked(admin):>16}")
        checkpoints = sorted({10_000, 65_536, 100_000, sources} & set(range(1, sources + 1)))
        started = time.time()
        for i in range(1, sources + 1):
            n = i + 256  # skip 127.0.0.x: other tests and tools live there
            src = f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((src, 0))
                s.sendto(b"flood", target)
            finally:
                s.close()
            if i in checkpoints:
                time.sleep(0.5)  # let the workers catch up
                print(f"{i:>14} {rss_kib(proc.pid) / 1024:>9.1f} {tracked(admin):>16}")
        took = time.time() - started
        print(f"   ({sources / took:,.0f} sources/s sent)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        stop.set()
        os.unlink(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=200_000)
    ap.add_argument("--table", type=int, default=65_536)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/ringway"))
    a = ap.parse_args()
    if a.sources > (1 << 24) - 512:
        sys.exit("at most 16.7 M sources fit in 127.0.0.0/8")
    flood(a.bin, a.sources, a.table, limited=False)
    flood(a.bin, a.sources, a.table, limited=True)


if __name__ == "__main__":
    main()
