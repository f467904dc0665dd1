#!/usr/bin/env bash
# ringway as a one-backend TCP forwarder with `forward = MODE`, for scripts/bench-proxies.sh.
# usage: bench-ringway-peer.sh auto|splice|copy LISTEN BACKEND RUNDIR
set -euo pipefail
mode=$1 listen=$2 backend=$3 rundir=$4
bin=${RINGWAY_BIN:?set RINGWAY_BIN}
mkdir -p "$rundir"
cat > "$rundir/ringway.toml" <<CFG
workers = ${RINGWAY_WORKERS:-2}
[[listener]]
name = "bench"
listen = "$listen"
forward = "$mode"
[[listener.backend]]
address = "$backend"
CFG
exec "$bin" run --config "$rundir/ringway.toml"
