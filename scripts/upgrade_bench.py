#!/usr/bin/env python3
"""What an upgrade costs with many open sessions and flows: how long the hand-off
takes and how long a busy session's bytes stop.

    python3 scripts/upgrade_bench.py [--bin target/release/ringway] [--sessions N]
        [--flows 10000] [--rounds 3]   (sessions: 8000 by default)

Each round starts ringway (2 workers) in front of local asyncio backends, opens
`--sessions` idle TCP connections through it plus one bulk download (the backend
streams without pause, the client reads without pause), then runs `ringway ctl
upgrade` and measures:

* upgrade: from `ctl upgrade` started to its answer (the new process serves);
* handed: from then to the old process gone (every session sent and taken);
* the old process's own figure (its log: first session exported to last taken);
* pause: the longest gap between two reads of the bulk download around the upgrade
  (its bytes stopped that long);
* then checks that a sample of the idle connections still echo.

A second ringway, with `--flows` UDP flows (one client socket each), gives the same
figures for flows (a sample answered after). The open files limit (20,000 here) is
why sessions stop at 8,000: each of ringway's two workers may use half of it, two
descriptors a session, and this process holds both ends of each.
"""
import argparse
import asyncio
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def free_port(kind=socket.SOCK_STREAM):
    """A port free for TCP and UDP a moment ago."""
    while True:
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM)
        try:
            other.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            other.close()


def backends(echo_port, bulk_port, udp_port, stop):
    """TCP echo, TCP endless stream, UDP echo: one asyncio loop on a thread."""

    async def echo(r, w):
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass

    async def bulk(r, w):
        chunk = b"x" * 65536
        try:
            while not stop.is_set():
                w.write(chunk)
                await w.drain()
        except (ConnectionError, OSError):
            pass

    class Udp(asyncio.DatagramProtocol):
        def connection_made(self, t):
            self.t = t

        def datagram_received(self, data, addr):
            self.t.sendto(data, addr)

    async def main():
        # Connections the round closes under the echo tasks are not news.
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: None)
        a = await asyncio.start_server(echo, "127.0.0.1", echo_port, backlog=4096)
        b = await asyncio.start_server(bulk, "127.0.0.1", bulk_port)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", udp_port))
        while not stop.is_set():
            await asyncio.sleep(0.1)
        a.close()
        b.close()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()


def config(d, ports):
    path = os.path.join(d, "ringway.toml")
    with open(path, "w") as f:
        f.write(f"""workers = 2
shutdown_timeout = "30s"
# One client thread on one CPU: without this every connection goes to one worker.
worker_cpu_affinity = false

[admin]
listen = "127.0.0.1:{ports['admin']}"

[[listener]]
name = "t"
listen = "127.0.0.1:{ports['t']}"
idle_timeout = "10m"
max_connections = 9500
health = {{ check = "none" }}
[[listener.backend]]
address = "127.0.0.1:{ports['echo']}"

[[listener]]
name = "bulk"
listen = "127.0.0.1:{ports['bulkl']}"
health = {{ check = "none" }}
[[listener.backend]]
address = "127.0.0.1:{ports['bulk']}"

[[listener]]
name = "u"
protocol = "udp"
listen = "127.0.0.1:{ports['u']}"
udp_idle_timeout = "10m"
udp_max_flows = 10000
health = {{ check = "none" }}
[[listener.backend]]
address = "127.0.0.1:{ports['udp']}"
""")
    return path


def wait_tcp(port, secs=10):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def status_pid(admin):
    import json
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=2) as r:
            return json.load(r)["process"]["pid"]
    except OSError:
        return None


def gone(pid):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def one_round(binary, sessions, flows):
    ports = {k: free_port() for k in ("admin", "t", "bulkl", "u", "echo", "bulk", "udp")}
    stop = threading.Event()
    backends(ports["echo"], ports["bulk"], ports["udp"], stop)
    wait_tcp(ports["echo"])
    d = tempfile.mkdtemp()
    path = config(d, ports)
    log = open(os.path.join(d, "ringway.log"), "w+")
    proc = subprocess.Popen([binary, "run", "-c", path], stderr=log, stdout=log)
    try:
        wait_tcp(ports["t"])
        wait_tcp(ports["admin"])
        conns = []
        for i in range(sessions):
            s = socket.create_connection(("127.0.0.1", ports["t"]))
            conns.append(s)
        for i, s in enumerate(conns[:: max(1, sessions // 200)]):
            s.sendall(b"ping")
            if s.recv(4) != b"ping":
                log.seek(0)
                raise SystemExit(f"connection {i} does not echo; ringway said:\n{log.read()[-3000:]}")
        clients = []
        for i in range(flows):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(("127.0.0.1", 0))
            u.settimeout(0.5)
            for _ in range(5):
                u.sendto(b"hello", ("127.0.0.1", ports["u"]))
                try:
                    u.recvfrom(64)
                    break
                except TimeoutError:
                    pass
            else:
                raise SystemExit(f"flow {i} got no answer")
            clients.append(u)
        # The bulk download, read without pause; every read's time.
        bulk = socket.create_connection(("127.0.0.1", ports["bulkl"]))
        reads = []
        reading = threading.Event()
        reading.set()

        def read_bulk():
            while reading.is_set():
                n = len(bulk.recv(1 << 20))
                if n == 0:
                    break
                reads.append(time.monotonic())

        t = threading.Thread(target=read_bulk, daemon=True)
        t.start()
        time.sleep(1)
        old = proc.pid
        t0 = time.monotonic()
        out = subprocess.run([binary, "ctl", "--admin", f"127.0.0.1:{ports['admin']}", "upgrade"],
                             capture_output=True, text=True)
        t1 = time.monotonic()
        if out.returncode != 0:
            raise SystemExit(f"upgrade failed: {out.stdout}{out.stderr}")
        while not gone(old) and time.monotonic() - t1 < 60:
            time.sleep(0.002)
        t2 = time.monotonic()
        time.sleep(1)
        reading.clear()
        window = [r for r in reads if t0 - 0.5 <= r <= t2 + 0.5]
        pause = max((b - a for a, b in zip(window, window[1:])), default=float("nan"))
        # Everything still works: a sample of sessions echo, a sample of flows answer.
        bad = 0
        for s in conns[:: max(1, sessions // 500)]:
            s.settimeout(5)
            try:
                s.sendall(b"after")
                bad += s.recv(5) != b"after"
            except OSError:
                bad += 1
        lost = 0
        for u in clients[:: max(1, flows // 500)]:
            u.settimeout(2)
            try:
                while True:  # replies to earlier retries first
                    u.settimeout(0.01)
                    u.recvfrom(64)
            except OSError:
                pass
            u.settimeout(2)
            try:
                u.sendto(b"again", ("127.0.0.1", ports["u"]))
                lost += u.recvfrom(64)[0] != b"again"
            except OSError:
                lost += 1
        log.seek(0)
        text = log.read()
        m = re.search(r"handed (\d+) established TCP session\(s\) and (\d+) UDP flow\(s\).*?taken in (\d+) ms", text)
        new = status_pid(ports["admin"])
        for s in conns:
            s.close()
        for u in clients:
            u.close()
        bulk.close()
        return {
            "upgrade_ms": (t1 - t0) * 1000,
            "handed_ms": (t2 - t1) * 1000,
            "old_says": m.group(0) if m else "(no hand-off line in the log)",
            "pause_ms": pause * 1000,
            "bad_sessions": bad,
            "lost_flows": lost,
            "new_pid": new,
        }
    finally:
        stop.set()
        pid = status_pid(ports["admin"])
        for p in {proc.pid, pid}:
            if p:
                try:
                    os.kill(p, 9)
                except ProcessLookupError:
                    pass
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/ringway")
    ap.add_argument("--sessions", type=int, default=8000)
    ap.add_argument("--flows", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for what, (s, f) in (("sessions", (a.sessions, 0)), ("flows", (0, a.flows)), ("both idle", (0, 0))):
        rows = [one_round(a.bin, s, f) for _ in range(a.rounds)]
        med = lambda k: statistics.median(r[k] for r in rows)
        print(f"{what}: {s} sessions, {f} flows, {a.rounds} rounds (median)")
        print(f"  ctl upgrade answered after {med('upgrade_ms'):.0f} ms; old process gone {med('handed_ms'):.0f} ms later")
        print(f"  bulk download paused at most {med('pause_ms'):.1f} ms")
        print(f"  after: {sum(r['bad_sessions'] for r in rows)} sessions failed, {sum(r['lost_flows'] for r in rows)} flows lost (samples)")
        for r in rows:
            print(f"    old process: {r['old_says']}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
