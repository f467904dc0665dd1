#!/usr/bin/env python3
"""Thousands of backends, all unreachable but one (issue 18): how fast the dead ones
leave, whether /status and /metrics keep answering meanwhile, memory, and whether
clients are served by the one good backend.

Everything runs in a network namespace this script makes (and deletes): loopback, plus
a veth owning 10.255.0.0/16, where the dead backends live: an iptables rule drops every
packet sent to them, so every check and connect to them times out (the worst case: refused
connects fail in microseconds). The good backend is 127.0.0.1:9000; it greets each
client with "good\\n".

For each peer in one run (ringway, then HAProxy with the same servers):
  - start it, then poll its status every 100 ms (ringway: GET /status; HAProxy: its
    stats CSV over HTTP), timing each answer and counting backends down;
  - scrape /metrics every second (ringway);
  - start a client every 20 ms through the listener (each waits up to 12 s for the
    greeting), and count which were served (ringway hashes the 5-tuple, HAProxy
    balances round robin: both spread clients over every backend they think is up);
  - sample RSS every 100 ms.
It reports: seconds until every dead backend is down and the good one up, the worst
and p99 status latency,
the worst /metrics latency, peak RSS and RSS at the end, and the share of clients
served, before and after every dead backend was down.

    python3 scripts/scale_bench.py [--backends 4000] [--source static|dns]
        [--peers ringway,haproxy] [--seconds 25] [--vnodes N] [--bin target/release/ringway]

`--source dns`: the backends come from one DNS answer (unbound serving N+1 A records of
one name; ringway asks it with a backend_set, HAProxy with server-template). One DNS
message holds at most ~4,090 A records (64 KiB), so --source dns takes N <= 4,000.
Needs root, iproute2, iptables, python3; haproxy and unbound for their rows.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = ("127.0.0.1", 9000)
LISTEN = ("127.0.0.1", 8000)
ADMIN = ("127.0.0.1", 9101)
METRICS = ("127.0.0.1", 9100)
DNS = ("127.0.0.1", 5300)


def dead(i):
    """The i-th dead backend's address (10.255.0.2 ...)."""
    n = i + 2
    return f"10.255.{n // 250}.{n % 250 + 2}"


def good_backend():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(GOOD)
    s.listen(4096)

    def serve():
        while True:
            c, _ = s.accept()
            try:
                c.sendall(b"good\n")
            except OSError:
                pass
            c.close()

    threading.Thread(target=serve, daemon=True).start()


def rss_kib(pids):
    total = 0
    for p in pids:
        try:
            m = re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{p}/status").read())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def tree(pid):
    """pid and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                kids = open(f"/proc/{p}/task/{t}/children").read().split()
                todo.extend(int(k) for k in kids)
        except OSError:
            pass
    return out


def unbound(d, n):
    records = "".join(f'  local-data: "big.scale.test. 30 IN A {dead(i)}"\n' for i in range(n))
    records += '  local-data: "big.scale.test. 30 IN A 127.0.0.1"\n'
    conf = os.path.join(d, "unbound.conf")
    open(conf, "w").write(
        f"server:\n  interface: {DNS[0]}@{DNS[1]}\n  port: {DNS[1]}\n  do-daemonize: no\n"
        f'  username: ""\n  chroot: ""\n  directory: "{d}"\n  pidfile: "{d}/unbound.pid"\n'
        f'  use-syslog: no\n  logfile: ""\n  verbosity: 0\n  do-ip6: no\n'
        f"  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n"
        f"  msg-buffer-size: 65552\n  max-udp-size: 65535\n"
        f'  local-zone: "scale.test." static\n{records}'
    )
    p = subprocess.Popen(["unbound", "-d", "-c", conf], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(d, "unbound.log"), "w"))
    for _ in range(100):
        r = subprocess.run(["dig", "+short", "+tcp", "-p", str(DNS[1]), "@" + DNS[0], "big.scale.test"],
                           capture_output=True, text=True) if shutil.which("dig") else None
        if r is None or r.stdout.strip():
            break
        time.sleep(0.1)
    time.sleep(0.5)
    return p


def ringway_config(a, d):
    head = (
        f'workers = 2\n[metrics]\nlisten = "{METRICS[0]}:{METRICS[1]}"\n'
        f'[admin]\nlisten = "{ADMIN[0]}:{ADMIN[1]}"\n'
    )
    if a.source == "dns":
        head += f'[resolver]\nservers = ["{DNS[0]}:{DNS[1]}"]\ntimeout = "5s"\n'
    body = f'[[listener]]\nname = "big"\nlisten = "{LISTEN[0]}:{LISTEN[1]}"\n'
    if a.vnodes:
        body += f"vnodes = {a.vnodes}\n"
    if a.source == "static":
        body += f'[[listener.backend]]\naddress = "{GOOD[0]}:{GOOD[1]}"\nid = "good"\n'
        body += "".join(f'[[listener.backend]]\naddress = "{dead(i)}:80"\n' for i in range(a.backends))
    else:
        body += f'[[listener.backend_set]]\ndns = "big.scale.test:{GOOD[1]}"\n'
        if a.max_backends_key:
            body += f"max_backends = {a.backends + 1}\n"
    body += '[listener.health]\ncheck = "tcp"\ninterval = "2s"\ntimeout = "1s"\nrise = 2\nfall = 3\n'
    path = os.path.join(d, "ringway.toml")
    open(path, "w").write(head + body)
    return path


def haproxy_config(a, d):
    conf = (
        "global\n  maxconn 6000\n  stats maxconn 64\n"
        "defaults\n  mode tcp\n  timeout connect 3s\n  timeout client 30s\n  timeout server 30s\n"
        "  timeout check 1s\n  retries 2\n  default-server inter 2s fall 3 rise 2\n"
        f"listen stats\n  mode http\n  bind {ADMIN[0]}:{ADMIN[1]}\n  stats enable\n  stats uri /\n  stats show-legends\n"
        f"frontend fe\n  bind {LISTEN[0]}:{LISTEN[1]}\n  default_backend big\n"
        "backend big\n  balance roundrobin\n"
    )
    if a.source == "static":
        conf += f"  server good {GOOD[0]}:{GOOD[1]} check\n"
        conf += "".join(f"  server d{i} {dead(i)}:80 check\n" for i in range(a.backends))
    else:
        conf += (f"  server-template s {a.backends + 1} big.scale.test:{GOOD[1]} check "
                 "resolvers r init-addr none\n")
        conf += (f"resolvers r\n  nameserver ns tcp@{DNS[0]}:{DNS[1]}\n  accepted_payload_size 65535\n"
                 "  hold valid 30s\n  resolve_retries 3\n  timeout resolve 1s\n  timeout retry 1s\n")
    path = os.path.join(d, "haproxy.cfg")
    open(path, "w").write(conf)
    return path


def get(url, timeout=10):
    t = time.perf_counter()
    body = urllib.request.urlopen(url, timeout=timeout).read()
    return time.perf_counter() - t, body


def count_ringway(body, n):
    """(dead backends down, the good one up) in a ringway /status."""
    status = json.loads(body)
    backends = status["listeners"][0]["backends"]
    dead = [b for b in backends if not b["address"].startswith("127.")]
    good = [b for b in backends if b["address"].startswith("127.")]
    # Discovered backends that never passed a check are down from the start; an
    # address of the answer not (yet) in the set takes no traffic either.
    up_dead = sum(1 for b in dead if b["state"] != "down")
    return n - up_dead if len(dead) == n else sum(1 for b in dead if b["state"] == "down"), any(b["state"] == "up" for b in good)


def count_haproxy(body, n):
    """(dead backends down, the good one up) in HAProxy's stats CSV."""
    lines = body.decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    col = {name: i for i, name in enumerate(head)}
    down, good = 0, False
    for line in lines[1:]:
        f = line.split(",")
        if len(f) < len(head) or f[0] != "big" or f[1] == "BACKEND":
            continue
        status, addr = f[col["status"]], f[col.get("addr", 0)]
        if f[1] == "good" or addr.startswith("127.0.0.1"):
            good = good or status.startswith("UP")
        elif status.startswith(("DOWN", "MAINT")):
            down += 1
    return min(down, n), good


def run_peer(peer, a, d):
    if peer == "ringway":
        cmd = [a.bin, "run", "-c", ringway_config(a, d)]
        status_url = f"http://{ADMIN[0]}:{ADMIN[1]}/status"
        metrics_url = f"http://{METRICS[0]}:{METRICS[1]}/metrics"
        count = count_ringway
    else:
        cmd = ["haproxy", "-db", "-f", haproxy_config(a, d)]
        status_url = f"http://{ADMIN[0]}:{ADMIN[1]}/;csv"
        metrics_url = None
        count = count_haproxy
    log = open(os.path.join(d, f"{peer}.log"), "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    stop = threading.Event()
    status_lat, metrics_lat, rss, clients, status_at = [], [], [], [], []
    all_down = [None]
    status_errors = [0]

    def poll_status():
        while not stop.is_set():
            try:
                t = time.monotonic() - t0
                took, body = get(status_url)
                status_lat.append(took)
                status_at.append((t, took))
                down, good_up = count(body, a.backends)
                if down >= a.backends and good_up and all_down[0] is None:
                    all_down[0] = time.monotonic() - t0
            except (OSError, ValueError, KeyError, IndexError):
                status_errors[0] += 1
            stop.wait(0.1)

    def poll_metrics():
        while metrics_url and not stop.is_set():
            try:
                metrics_lat.append(get(metrics_url)[0])
            except OSError:
                pass
            stop.wait(1.0)

    def sample_rss():
        peak = 0
        while not stop.is_set():
            v = rss_kib(tree(proc.pid))
            rss.append(v)
            stop.wait(0.1)

    def client():
        t = time.monotonic() - t0
        ok = False
        try:
            with socket.create_connection(LISTEN, timeout=12) as s:
                s.settimeout(12)
                ok = s.recv(16).startswith(b"good")
        except OSError:
            pass
        clients.append((t, ok))

    # Wait for the listener before counting clients.
    for _ in range(600):
        try:
            socket.create_connection(LISTEN, timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                log.flush()
                why = open(os.path.join(d, f"{peer}.log")).read().strip().splitlines()
                return {"peer": peer, "failed": why[-1] if why else f"exit {proc.returncode}"}
            time.sleep(0.05)
    threads = [threading.Thread(target=f, daemon=True) for f in (poll_status, poll_metrics, sample_rss)]
    for t in threads:
        t.start()
    end = t0 + a.seconds
    cthreads = []
    while time.monotonic() < end:
        c = threading.Thread(target=client, daemon=True)
        c.start()
        cthreads.append(c)
        time.sleep(0.02)
    for c in cthreads:
        c.join(timeout=15)
    stop.set()
    for t in threads:
        t.join(timeout=15)
    final_rss = rss_kib(tree(proc.pid))
    try:
        last = count(get(status_url)[1], a.backends)
    except (OSError, ValueError, KeyError, IndexError):
        last = None
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    lat = sorted(status_lat)
    p99 = lat[int(len(lat) * 0.99)] if lat else float("nan")
    after = [ok for t, ok in clients if all_down[0] is not None and t > all_down[0]]
    before = [ok for t, ok in clients if all_down[0] is None or t <= all_down[0]]
    settled = [x for t, x in status_at if all_down[0] is not None and t > all_down[0]]
    return {
        "peer": peer,
        "status_max_after_ms": max(settled) * 1000 if settled else None,
        "all_down_s": all_down[0],
        "status_max_ms": lat[-1] * 1000 if lat else None,
        "status_p99_ms": p99 * 1000,
        "status_answers": len(lat),
        "status_errors": status_errors[0],
        "metrics_max_ms": max(metrics_lat) * 1000 if metrics_lat else None,
        "rss_peak_mib": max(rss) / 1024 if rss else None,
        "rss_end_mib": final_rss / 1024,
        "last": last,
        "served_before": (sum(before), len(before)),
        "served_after": (sum(after), len(after)),
    }


def fmt(r):
    if "failed" in r:
        return f"{r['peer']:<8} did not start: {r['failed']}"
    def frac(p):
        ok, n = p
        return f"{ok}/{n} ({100.0 * ok / n:.1f}%)" if n else "-"
    down = (f"{r['all_down_s']:.1f} s" if r["all_down_s"] is not None
            else f"never ({r['last'][0]} down, good up: {r['last'][1]})" if r["last"] else "never")
    mx = f"{r['metrics_max_ms']:.0f} ms" if r["metrics_max_ms"] is not None else "-"
    st = (f"max {r['status_max_ms']:.0f} ms, p99 {r['status_p99_ms']:.0f} ms"
          if r["status_max_ms"] is not None else "never answered")
    if r["status_max_after_ms"] is not None:
        st += f", max {r['status_max_after_ms']:.0f} ms once all down"
    return (f"{r['peer']:<8} all down: {down:>7}  status: {st} "
            f"({r['status_answers']} answers, {r['status_errors']} failed)  "
            f"metrics max: {mx}  RSS peak {r['rss_peak_mib']:.0f} MiB, end {r['rss_end_mib']:.0f} MiB  "
            f"served before: {frac(r['served_before'])}, after: {frac(r['served_after'])}")


def inner(a):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    # 10.255.0.0/16 is routed out of a veth whose packets an iptables rule drops.
    subprocess.run(["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"], check=True)
    subprocess.run(["ip", "addr", "add", "10.255.0.1/16", "dev", "v0"], check=True)
    subprocess.run(["ip", "link", "set", "v0", "up"], check=True)
    subprocess.run(["ip", "link", "set", "v1", "up"], check=True)
    subprocess.run(["iptables", "-A", "OUTPUT", "-d", "10.255.0.0/16", "-j", "DROP"], check=True)
    good_backend()
    d = tempfile.mkdtemp(prefix="rwscale")
    dns = unbound(d, a.backends) if a.source == "dns" else None
    print(f"{a.backends} dead backends + 1 good, from {a.source}"
          f"{f', vnodes {a.vnodes}' if a.vnodes else ''}; {a.seconds} s per peer; files in {d}", flush=True)
    try:
        for peer in a.peers.split(","):
            if peer == "haproxy" and not shutil.which("haproxy"):
                print("haproxy: not installed (apt-get install haproxy)")
                continue
            print(fmt(run_peer(peer, a, d)), flush=True)
            time.sleep(1)
    finally:
        if dns:
            dns.terminate()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", type=int, default=4000)
    p.add_argument("--source", choices=["static", "dns"], default="static")
    p.add_argument("--peers", default="ringway,haproxy")
    p.add_argument("--seconds", type=float, default=25)
    p.add_argument("--vnodes", type=int, default=0)
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/ringway"))
    p.add_argument("--no-max-backends-key", dest="max_backends_key", action="store_false",
                   help="leave out max_backends (for binaries older than the key)")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.inner:
        return inner(a)
    ns = f"rwscale{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        args = [x for x in sys.argv[1:]] + ["--inner", "--bin", os.path.abspath(a.bin)]
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), *args]).returncode
    finally:
        subprocess.run(["ip", "netns", "pids", ns], capture_output=True)
        for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
            try:
                os.kill(int(pid), 9)
            except OSError:
                pass
        subprocess.run(["ip", "netns", "del", ns])


if __name__ == "__main__":
    sys.exit(main() or 0)
