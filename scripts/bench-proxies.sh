# shellcheck shell=bash
# Extra peerbench rows (sourced by run-all.sh via --proxies-file): ringway with its
# forwarding mode forced, to show what the adaptive copy/splice default buys.
_rw_scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
add_proxy RINGWAY-splice "$_rw_scripts/bench-ringway-peer.sh splice {LISTEN} {BACKEND} {RUNDIR}"
add_proxy RINGWAY-copy "$_rw_scripts/bench-ringway-peer.sh copy {LISTEN} {BACKEND} {RUNDIR}"
