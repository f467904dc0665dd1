#!/usr/bin/env bash
# ringway as a one-backend forwarder for the extra peerbench rows of
# scripts/bench-proxies.sh: like peerbench's own peers/ringway.sh (no active health
# check, udp_responses = 1), with the forwarding mode forced, the access log on, or
# access lists and per-source limits set, or worker_cpu_affinity off (nocpu; it is on
# by default where it applies).
# usage: bench-ringway-peer.sh tcp|udp auto|splice|copy|kernel nolog|log|edge|nocpu LISTEN BACKEND RUNDIR
set -euo pipefail
proto=$1 mode=$2 log=$3 listen=$4 backend=$5 rundir=$6
bin=${RINGWAY_BIN:?set RINGWAY_BIN}
mkdir -p "$rundir"
{
  echo "workers = ${RINGWAY_WORKERS:-2}"
  if [[ $log == nocpu ]]; then echo 'worker_cpu_affinity = false'; fi
  if [[ $log == log ]]; then
    # JSON lines to a file, every connection (no sampling): the worst case.
    printf '[access_log]\npath = "%s"\nformat = "json"\n' "$rundir/access.log"
  fi
  printf '[[listener]]\nname = "bench"\nprotocol = "%s"\nlisten = "%s"\n' "$proto" "$listen"
  if [[ $log == edge ]]; then
    # Every rule checked on every new connection or flow, none refusing the benchmark's
    # clients: an allow list, a deny list of 1,000 separate networks they are not in, and
    # per-source limits far above what one client does (every connection takes the
    # source table's lock, and all come from one source: one shard, the worst case).
    echo 'allow = ["0.0.0.0/0", "::/0"]'
    printf 'deny = ['
    for i in $(seq 0 999); do printf '"198.18.%d.%d/32", ' $((i / 125)) $((i % 125 * 2)); done
    echo '"198.19.0.0/16"]'
    if [[ $proto == udp ]]; then
      printf 'udp_max_flows_per_source = 1000000\nudp_flow_rate_per_source = "10000000/s"\n'
    else
      printf 'max_connections_per_source = 1000000\nconnection_rate_per_source = "10000000/s"\n'
    fi
  fi
  if [[ $proto == udp ]]; then echo 'udp_responses = 1'; else echo "forward = \"$mode\""; fi
  printf '[listener.health]\ncheck = "none"\n'
  printf '[[listener.backend]]\naddress = "%s"\n' "$backend"
} > "$rundir/ringway.toml"
exec "$bin" run --config "$rundir/ringway.toml"
