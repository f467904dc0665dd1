#!/usr/bin/env python3
"""What idle connections cost a ringway in CPU: hold N idle TCP connections through it
for a while and read its utime+stime from /proc before and after. Several binaries are
measured in turn, in one run, rounds interleaved (the machine is shared and noisy).

    python3 scripts/idle_cpu.py [--conns 9000] [--secs 30] [--rounds 3] BIN [BIN...]

Each ringway gets a one-listener config (2 workers, idle_timeout 10m, no health checks)
in front of an asyncio backend that holds connections open. Prints, per binary, the
CPU milliseconds per second of idling and the wake-ups (voluntary context switches) per
second, median over the rounds.
"""
import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def backend(port, stop):
    """A thread running an asyncio server that accepts and holds connections."""

    async def main():
        srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port, backlog=4096)
        while not stop.is_set():
            await asyncio.sleep(0.2)
        srv.close()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()


def cpu_and_switches(pid):
    """(CPU nanoseconds summed over threads, from schedstat; voluntary context switches)."""
    ns = switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            ns += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                if line.startswith("voluntary_ctxt_switches"):
                    switches += int(line.split()[1])
        except FileNotFoundError:
            pass
    return ns, switches


def measure(binary, conns, secs):
    bport, lport = free_port(), free_port()
    stop = threading.Event()
    backend(bport, stop)
    time.sleep(0.3)
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "ringway.toml")
        with open(cfg, "w") as f:
            f.write(
                f'workers = 2\n[[listener]]\nname = "idle"\nlisten = "127.0.0.1:{lport}"\n'
                f'idle_timeout = "10m"\nmax_connections = {conns + 100}\n'
                f'[[listener.backend]]\naddress = "127.0.0.1:{bport}"\n'
                '[listener.health]\ncheck = "none"\n'
            )
        proc = subprocess.Popen(
            [binary, "run", "--config", cfg, "--log-level", "error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", lport), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            socks = []
            for _ in range(conns):
                socks.append(socket.create_connection(("127.0.0.1", lport), timeout=5))
            # Past every connect (and its connect_timeout of 3 s): only idling is left.
            time.sleep(5)
            t0, s0 = cpu_and_switches(proc.pid)
            time.sleep(secs)
            t1, s1 = cpu_and_switches(proc.pid)
            for s in socks:
                s.close()
            return (t1 - t0) / 1e6 / secs, (s1 - s0) / secs
        finally:
            proc.terminate()
            proc.wait()
            stop.set()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=9000)
    ap.add_argument("--secs", type=float, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("bins", nargs="+")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = {b: [] for b in a.bins}
    for r in range(a.rounds):
        for b in a.bins:
            cpu, wakeups = measure(b, a.conns, a.secs)
            results[b].append((cpu, wakeups))
            print(f"round {r + 1} {b}: {cpu:.3f} ms CPU/s, {wakeups:.1f} wake-ups/s", flush=True)
    print(f"\n{a.conns} idle connections held {a.secs:.0f} s, median of {a.rounds}:")
    for b, rs in results.items():
        cpu = statistics.median(x for x, _ in rs)
        wk = statistics.median(y for _, y in rs)
        print(f"  {b}: {cpu:.3f} ms CPU per second, {wk:.1f} wake-ups per second")


if __name__ == "__main__":
    sys.exit(main())
