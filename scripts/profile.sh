#!/usr/bin/env bash
# Where ringway's CPU goes under one peerbench load: runs the harness for TEST (cps,
# rps, udp, bulk1, bulk8) with ringway alone (DIRECT is always in a run), attaches
# `perf record -g` to the `ringway run` process for SECONDS once its load is on, and
# prints the split by object (kernel, ringway, libc) and the top symbols. Needs root,
# linux-perf and peerbench's packages; uses target/release/ringway.
#
#     scripts/profile.sh cps 8
set -euo pipefail
cd "$(dirname "$0")/.."
test=${1:-cps}
secs=${2:-8}
out=${PROFILE_DIR:-/tmp/ringway-profile}/$test
mkdir -p "$out"
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
RINGWAY_BIN=$PWD/target/release/ringway ../shared/peerbench/run-all.sh \
    --only RINGWAY --tests "$test" --reps 1 --dur $((secs + 6)) >"$out/peerbench.log" 2>&1 &
bench=$!
pid=
for _ in $(seq 1 1200); do
    pid=$(pgrep -f 'ringway run' | head -n 1 || true)
    [ -n "$pid" ] && break
    sleep 0.1
done
[ -n "$pid" ] || { echo "ringway never started; see $out/peerbench.log" >&2; exit 1; }
sleep 2 # the load starts once ringway listens
perf record -q -F 999 -g -p "$pid" -o "$out/perf.data" -- sleep "$secs" 2>/dev/null
wait "$bench" || true
echo "== $test: samples by object"
perf report -i "$out/perf.data" --no-children --sort dso --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | head -n 8
echo "== $test: top symbols"
perf report -i "$out/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | head -n "${TOP:-25}"
echo "(perf data and the harness log in $out)"
