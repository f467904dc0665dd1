#!/usr/bin/env bash
# ringway as a one-backend forwarder for the extra peerbench rows of
# scripts/bench-proxies.sh: like peerbench's own peers/ringway.sh (no active health
# check, udp_responses = 1), with the forwarding mode forced or the access log on.
# usage: bench-ringway-peer.sh tcp|udp auto|splice|copy log|nolog LISTEN BACKEND RUNDIR
set -euo pipefail
proto=$1 mode=$2 log=$3 listen=$4 backend=$5 rundir=$6
bin=${RINGWAY_BIN:?set RINGWAY_BIN}
mkdir -p "$rundir"
{
  echo "workers = ${RINGWAY_WORKERS:-2}"
  if [[ $log == log ]]; then
    # JSON lines to a file, every connection (no sampling): the worst case.
    printf '[access_log]\npath = "%s"\nformat = "json"\n' "$rundir/access.log"
  fi
  printf '[[listener]]\nname = "bench"\nprotocol = "%s"\nlisten = "%s"\n' "$proto" "$listen"
  if [[ $proto == udp ]]; then echo 'udp_responses = 1'; else echo "forward = \"$mode\""; fi
  printf '[listener.health]\ncheck = "none"\n'
  printf '[[listener.backend]]\naddress = "%s"\n' "$backend"
} > "$rundir/ringway.toml"
exec "$bin" run --config "$rundir/ringway.toml"
