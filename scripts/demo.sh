#!/usr/bin/env bash
# Quickstart: build ringway, start three demo backends and ringway in front of them,
# open 30 connections and show how they spread, where clients go when a backend is
# down, a drain, the status and a few metrics; then stop everything.
# Needs only the Rust toolchain and python3 (standard library).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/ringway
conf=conf/demo.toml
if [ ! -x "$bin" ]; then
    echo "building ringway (release): 5-7 minutes the first time on 2 cores (cargo's progress below), seconds after that"
fi
cargo build --release
"$bin" check -c "$conf"

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

python3 scripts/demo_backends.py 9001 9002 9003 --lifetime 300 &
pids+=($!)
# Backends first: a connection through ringway before they listen would be refused by
# all three (and count as failures on the data path).
python3 scripts/wait_tcp.py 10 127.0.0.1:9001 127.0.0.1:9002 127.0.0.1:9003
# ringway's own log goes to a file, shown at the end.
"$bin" run -c "$conf" 2> "$work/ringway.log" &
pids+=($!)
# Ready when the admin API answers: it starts after the listeners are bound, and
# asking it is not a connection through the demo listener.
for _ in $(seq 100); do
    "$bin" ctl -c "$conf" status --json >/dev/null 2>&1 && break
    sleep 0.1
done
"$bin" ctl -c "$conf" status --json >/dev/null

python3 - "$work/clients.txt" <<'PY'
import collections, socket, sys
counts = collections.Counter()
clients = []
for i in range(30):
    s = socket.create_connection(("127.0.0.1", 8080), timeout=5)
    greeting = s.makefile().readline().strip()
    s.sendall(b"ping\n")
    echo = s.recv(5)
    backend = greeting.split()[2]   # "hello from backend-2 (:9002)"
    clients.append((f"{s.getsockname()[0]}:{s.getsockname()[1]}", backend))
    print(f"client {clients[-1][0]:>17} -> {greeting}   (echo: {echo!r})")
    counts[greeting] += 1
    s.close()
print("\nconnections per backend:")
for name, n in sorted(counts.items()):
    print(f"  {name:<26} {n:3d} {'#' * n}")
with open(sys.argv[1], "w") as f:
    f.writelines(f"{c} {b}\n" for c, b in clients)
PY

echo
echo "If backend-2 went down, where would these clients go? (ringway route --down backend-2)"
python3 - "$bin" "$conf" "$work/clients.txt" <<'PY'
import subprocess, sys
binary, conf, path = sys.argv[1:]
seen = [line.split() for line in open(path)]
# Three clients of backend-2 (they move) and two of the others (they stay).
picked = [c for c in seen if c[1] == "backend-2"][:3] + [c for c in seen if c[1] != "backend-2"][:2]
stdin = "".join(f"{c}\n" for c, _ in picked)
out = subprocess.run([binary, "route", "-c", conf, "--listener", "demo", "--ids", "--down", "backend-2"],
                     input=stdin, capture_output=True, text=True, check=True).stdout
for (client, before), line in zip(picked, out.splitlines()):
    after = line.split()[1]
    what = "moves: its backend is down" if before != after else "stays: nothing else moves"
    print(f"  {client:>17}  {before} -> {after:<10} {what}")
PY
echo
echo "Drain backend-2 through the admin API (open connections stay, new ones go elsewhere):"
"$bin" ctl -c "$conf" drain demo backend-2
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
echo "ringway's log:"
kill "${pids[1]}"
wait "${pids[1]}" 2>/dev/null || true
sed 's/^/  /' "$work/ringway.log"
echo
echo "Demo done. Run it yourself: $bin run -c $conf   (Ctrl-C drains and stops)"
echo "and open http://127.0.0.1:9101/ in a browser for the status page."
