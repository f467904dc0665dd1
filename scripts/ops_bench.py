#!/usr/bin/env python3
"""Cost of the operations side: /metrics scrape, GET /status, SIGHUP reload, memory.

Starts target/release/ringway on a generated config of LISTENERS TCP listeners with
BACKENDS backends each (health checks off; nothing needs to listen there), then:
  - scrapes /metrics and GETs /status N times each (median and max wall time, size);
  - reloads RELOADS (5) times, each re-weighting one backend of every listener, and reads from
    ringway's own log how long each reload took (SIGHUP line to 'reloaded' line);
  - reports ringway's RSS before and after.
Everything on 127.0.0.1.  usage: scripts/ops_bench.py [LISTENERS] [BACKENDS] [N] [RELOADS]
"""
import os, re, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from datetime import datetime

L = int(sys.argv[1]) if len(sys.argv) > 1 else 10
B = int(sys.argv[2]) if len(sys.argv) > 2 else 100
N = int(sys.argv[3]) if len(sys.argv) > 3 else 50
RELOADS = int(sys.argv[4]) if len(sys.argv) > 4 else 5
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.environ.get("RINGWAY_BIN", os.path.join(root, "target/release/ringway"))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

mport, aport = free_port(), free_port()
def config(bump):
    out = [f'workers = 2\n[metrics]\nlisten = "127.0.0.1:{mport}"\n[admin]\nlisten = "127.0.0.1:{aport}"\n']
    for l in range(L):
        out.append(f'[[listener]]\nname = "l{l}"\nlisten = "127.0.0.1:{ports[l]}"\n[listener.health]\ncheck = "none"\n')
        for b in range(B):
            w = 1 + (bump if b == 0 else 0)
            out.append(f'[[listener.backend]]\naddress = "127.0.0.{1 + b // 250}:{20000 + b % 250}"\nid = "b{b}"\nweight = {w}\n')
    return "".join(out)

ports = [free_port() for _ in range(L)]
d = tempfile.mkdtemp()
conf, log = os.path.join(d, "ringway.toml"), os.path.join(d, "log")
open(conf, "w").write(config(0))
p = subprocess.Popen([binary, "run", "-c", conf], stderr=open(log, "w"), env={**os.environ, "RUST_LOG": "info"})
def get(path, port):
    t = time.perf_counter()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30).read()
    return time.perf_counter() - t, len(body)
def rss():
    return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{p.pid}/status").read()).group(1))
try:
    for _ in range(200):
        try:
            get("/metrics", mport); break
        except OSError:
            time.sleep(0.05)
    rss0 = rss()
    for path, port in (("/metrics", mport), ("/status", aport)):
        runs = [get(path, port) for _ in range(N)]
        ts = sorted(r[0] * 1000 for r in runs)
        print(f"GET {path:<8} {L} listeners x {B} backends: median {statistics.median(ts):.2f} ms, max {ts[-1]:.2f} ms, {runs[0][1]:,} bytes")
    took = []
    for i in range(1, RELOADS + 1):
        open(conf, "w").write(config(i))
        p.send_signal(signal.SIGHUP)
        for _ in range(600):
            lines = open(log).read().splitlines()
            done = [l for l in lines if "reloaded" in l]
            if len(done) >= i:
                break
            time.sleep(0.05)
        stamp = lambda l: datetime.fromisoformat(l.split()[0].replace("Z", "+00:00"))
        hup = [l for l in lines if "SIGHUP" in l][i - 1]
        took.append((stamp(done[i - 1]) - stamp(hup)).total_seconds() * 1000)
    print(f"reload (re-weight one backend per listener): median {statistics.median(took):.1f} ms, max {max(took):.1f} ms")
    print(f"RSS: {rss0:,} KiB at start, {rss():,} KiB after {2 * N} requests and {RELOADS} reloads")
finally:
    p.send_signal(signal.SIGTERM); p.wait(timeout=30)
