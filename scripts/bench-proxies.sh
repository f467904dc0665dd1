# shellcheck shell=bash
# Extra peerbench rows (sourced by run-all.sh via --proxies-file): ringway with its
# forwarding mode forced, to show what the adaptive copy/splice default buys and what
# the kernel's own forwarding (RINGWAY-kernel, sockmap) does, and with
# the access log on (RINGWAY-log: a JSON line per connection and flow, to a file), to
# show what logging costs, and with access lists and per-source limits (RINGWAY-edge),
# to show what they cost, and without worker_cpu_affinity (RINGWAY-nocpu: workers
# not pinned, accepts spread by hash), to show what it buys.
_rw_scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
add_proxy RINGWAY-splice "$_rw_scripts/bench-ringway-peer.sh tcp splice nolog {LISTEN} {BACKEND} {RUNDIR}"
add_proxy RINGWAY-copy "$_rw_scripts/bench-ringway-peer.sh tcp copy nolog {LISTEN} {BACKEND} {RUNDIR}"
add_proxy RINGWAY-kernel "$_rw_scripts/bench-ringway-peer.sh tcp kernel nolog {LISTEN} {BACKEND} {RUNDIR}"
add_proxy RINGWAY-log \
  "$_rw_scripts/bench-ringway-peer.sh tcp auto log {LISTEN} {BACKEND} {RUNDIR}" \
  "$_rw_scripts/bench-ringway-peer.sh udp auto log {LISTEN} {BACKEND} {RUNDIR}"
add_proxy RINGWAY-edge \
  "$_rw_scripts/bench-ringway-peer.sh tcp auto edge {LISTEN} {BACKEND} {RUNDIR}" \
  "$_rw_scripts/bench-ringway-peer.sh udp auto edge {LISTEN} {BACKEND} {RUNDIR}"
add_proxy RINGWAY-nocpu \
  "$_rw_scripts/bench-ringway-peer.sh tcp auto nocpu {LISTEN} {BACKEND} {RUNDIR}" \
  "$_rw_scripts/bench-ringway-peer.sh udp auto nocpu {LISTEN} {BACKEND} {RUNDIR}"
