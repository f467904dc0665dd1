#!/usr/bin/env bash
# Quickstart: build ringway, start three demo backends and ringway in front of them,
# open 30 connections and show how they spread; then stop everything.
# Needs only the Rust toolchain and python3 (standard library).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
bin=target/release/ringway
conf=conf/demo.toml
"$bin" check -c "$conf"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

python3 scripts/demo_backends.py 9001 9002 9003 --lifetime 300 &
pids+=($!)
# Backends first: a probe of ringway's port before they listen would be refused by
# all three (and count as failures on the data path).
python3 scripts/wait_tcp.py 10 127.0.0.1:9001 127.0.0.1:9002 127.0.0.1:9003
"$bin" run -c "$conf" &
pids+=($!)

python3 scripts/wait_tcp.py 10 127.0.0.1:8080
python3 - <<'PY'
import collections, socket
counts = collections.Counter()
clients = []
for i in range(30):
    s = socket.create_connection(("127.0.0.1", 8080), timeout=5)
    greeting = s.makefile().readline().strip()
    s.sendall(b"ping\n")
    echo = s.recv(5)
    clients.append(f"{s.getsockname()[0]}:{s.getsockname()[1]}")
    print(f"client {clients[-1]:>17} -> {greeting}   (echo: {echo!r})")
    counts[greeting] += 1
    s.close()
print("\nconnections per backend:")
for name, n in sorted(counts.items()):
    print(f"  {name:<26} {n:3d} {'#' * n}")
open("/tmp/ringway-demo-clients.txt", "w").write("\n".join(clients[:5]) + "\n")
PY

echo
echo "Where would the first five clients go with backend-2 down? (ringway route)"
"$bin" route -c "$conf" --listener demo --down backend-2 < /tmp/ringway-demo-clients.txt
echo
echo "Drain backend-2 through the admin API (open connections stay, new ones go elsewhere):"
"$bin" ctl -c "$conf" drain demo backend-2 | grep '"state"'
"$bin" ctl -c "$conf" status
echo
echo "A few Prometheus metrics (GET http://127.0.0.1:9100/metrics):"
python3 -c '
import urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9100/metrics", timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith(("ringway_backend_connections_total", "ringway_backend_ring_share", "ringway_listener_connections_total")):
        print("  " + line)
'
echo
echo "Demo done. Run it yourself: $bin run -c $conf   (Ctrl-C drains and stops)"
