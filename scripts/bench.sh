#!/usr/bin/env bash
# Side-by-side benchmark: ringway (default, and with forced splice: RINGWAY-splice) vs a direct connection (the limit), HAProxy (mode tcp,
# 2 threads: forced splice, splice-auto, no splice) and NGINX stream, in one run, using
# the shared peerbench harness (../shared/peerbench; override with PEERBENCH=DIR).
#
#   scripts/bench.sh                       # bulk1,bulk8,cps,rps,udp,mem; 5 s runs, 3 reps
#   scripts/bench.sh --dur 10              # the full 10 s runs
#   scripts/bench.sh --tests bulk1,bulk8   # a subset (any run-all.sh option passes through)
#
# Needs root (it creates a network namespace) and, once:
#   apt-get install -y haproxy nginx libnginx-mod-stream iperf3 dnsperf unbound wrk socat iproute2 procps python3
# Results: the table on stdout; every raw file under /tmp/peerbench-results/latest/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pb=${PEERBENCH:-$root/../shared/peerbench}
[[ -x $pb/run-all.sh ]] || { echo "peerbench not found at $pb (set PEERBENCH)" >&2; exit 2; }
for tool in haproxy nginx iperf3 wrk; do
  command -v "$tool" >/dev/null || { echo "missing $tool: see the apt-get line in $0" >&2; exit 2; }
done
(cd "$root" && cargo build --release --locked --quiet)
export RINGWAY_BIN=$root/target/release/ringway
only=${ONLY:-RINGWAY,RINGWAY-splice,HAPROXY,HAPROXY-spliceauto,HAPROXY-nosplice,NGINX}
tests=${TESTS:-bulk1,bulk8,cps,rps,udp,mem}
cd "$pb"
exec ./run-all.sh --proxies-file proxies-extra.sh --proxies-file "$root/scripts/bench-proxies.sh" --only "$only" --tests "$tests" "$@"
