#!/usr/bin/env python3
"""Health-check figures for docs/BENCHMARKS.md, at the default settings
(check = "tcp", interval 2s, timeout 1s, rise 2, fall 3).

1. Time from killing a backend to "DOWN" in ringway's log, with no traffic (active
   checks only) and with traffic (passive checks: failed connects count).
2. Time from restarting it to "UP".
3. Fraction of keys moved when 1 of 10 backends goes down and when it comes back,
   from `ringway route` over 100,000 client addresses.

    cargo build --release && python3 scripts/health_timing.py
Loopback only; every wait is bounded.
"""
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("RINGWAY_BIN", os.path.join(ROOT, "target/release/ringway"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Backend:
    def __init__(self, port):
        self.port = port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(512)
        self.alive = True
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while self.alive:
            try:
                c, _ = self.sock.accept()
                c.sendall(b"hi\n")
                c.close()
            except OSError:
                return

    def kill(self):
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()


def wait_log(path, needle, start, limit=30.0):
    while time.time() - start < limit:
        with open(path) as f:
            if needle in f.read():
                return time.time() - start
        time.sleep(0.01)
    return None


def run(traffic):
    ports = [free_port() for _ in range(3)]
    backends = [Backend(p) for p in ports]
    listen = free_port()
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "r.toml")
    with open(cfg, "w") as f:
        f.write(f'[[listener]]\nname = "t"\nlisten = "127.0.0.1:{listen}"\n')
        for i, p in enumerate(ports):
            f.write(f'[[listener.backend]]\naddress = "127.0.0.1:{p}"\nid = "b{i}"\n')
    log = os.path.join(d, "log")
    proc = subprocess.Popen([BIN, "run", "-c", cfg], stderr=open(log, "w"))
    time.sleep(5)  # let every backend be checked a couple of times
    stop = threading.Event()

    def load():
        while not stop.is_set():
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=1).close()
            except OSError:
                pass
            time.sleep(0.002)

    if traffic:
        threading.Thread(target=load, daemon=True).start()
    t0 = time.time()
    backends[1].kill()
    down = wait_log(log, "backend b1 (", t0)
    time.sleep(1)
    t1 = time.time()
    backends[1] = Backend(ports[1])
    up = wait_log(log, "UP after", t1)
    stop.set()
    proc.terminate()
    proc.wait(10)
    for b in backends:
        b.kill()
    return down, up


def moved_fractions():
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "r.toml")
    with open(cfg, "w") as f:
        f.write('[[listener]]\nname = "t"\nlisten = "127.0.0.1:8080"\n')
        for i in range(10):
            f.write(f'[[listener.backend]]\naddress = "127.0.0.1:{9001 + i}"\n')
    rnd = random.Random(1)
    clients = "".join(f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}:{rnd.randrange(1024, 65536)}\n" for _ in range(100_000))

    def route(*down):
        args = [BIN, "route", "-c", cfg, "--listener", "t"]
        for x in down:
            args += ["--down", x]
        out = subprocess.run(args, input=clients, capture_output=True, text=True, check=True).stdout
        return [line.split()[1] for line in out.splitlines()]

    before = route()
    victim = "127.0.0.1:9004"
    during = route(victim)
    after = route()
    owned = sum(1 for b in before if b == victim) / len(before)
    moved = sum(1 for x, y in zip(before, during) if x != y) / len(before)
    between_survivors = sum(1 for x, y in zip(before, during) if x != y and x != victim)
    back = sum(1 for x, y in zip(before, after) if x != y)
    return owned, moved, between_survivors, back


def main():
    if not os.path.exists(BIN):
        sys.exit(f"build first: {BIN} is missing")
    for traffic in (False, True):
        down, up = run(traffic)
        mode = "with traffic (passive + active)" if traffic else "no traffic (active checks only)"
        print(f"{mode}: kill -> DOWN {down:.2f} s; restart -> UP {up:.2f} s")
    owned, moved, survivors, back = moved_fractions()
    print(f"1 of 10 backends down: it owned {owned:.4f} of 100,000 keys; {moved:.4f} moved; "
          f"{survivors} moved between backends that stayed up; {back} differ after it came back")


if __name__ == "__main__":
    main()
