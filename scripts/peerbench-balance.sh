# shellcheck shell=bash
# peerbench rows for the load-aware balancing A/B (issue 20): what bounded loads,
# least connections and a per-backend limit cost a new connection, against the plain
# ring. Every row has the same four backends (ids b1..b4, all at the harness's one
# backend address), so only the choice differs. Use with:
#   cargo build --release
#   ../shared/peerbench/run-all.sh --proxies-file "$PWD/scripts/peerbench-balance.sh" \
#     --only RINGWAY-ring,RINGWAY-bounded,RINGWAY-leastconn,RINGWAY-limit --tests cps
# (DIRECT is always included.)
if [[ -n ${RINGWAY_BIN:-} && -x ${RINGWAY_BIN:-} ]]; then
  _four='id = "b1"
[[listener.backend]]
address = "{BACKEND}"
id = "b2"
[[listener.backend]]
address = "{BACKEND}"
id = "b3"
[[listener.backend]]
address = "{BACKEND}"
id = "b4"'
  _limit='id = "b1"
max_connections = 100000
[[listener.backend]]
address = "{BACKEND}"
id = "b2"
max_connections = 100000
[[listener.backend]]
address = "{BACKEND}"
id = "b3"
max_connections = 100000
[[listener.backend]]
address = "{BACKEND}"
id = "b4"
max_connections = 100000'
  _rw='{PB_DIR}/peers/ringway.sh tcp {LISTEN} {BACKEND} {RUNDIR}'
  add_proxy RINGWAY-ring "RINGWAY_EXTRA='$_four' $_rw"
  add_proxy RINGWAY-bounded "RINGWAY_LISTENER_EXTRA='balance_factor = 1.25' RINGWAY_EXTRA='$_four' $_rw"
  add_proxy RINGWAY-leastconn "RINGWAY_LISTENER_EXTRA='balance = \"least-connections\"' RINGWAY_EXTRA='$_four' $_rw"
  add_proxy RINGWAY-limit "RINGWAY_EXTRA='$_limit' $_rw"
fi
