#!/usr/bin/env bash
# Where ringway's CPU goes under one peerbench load: runs the harness for TEST (cps,
# rps, udp, bulk1, bulk8) with ringway alone (DIRECT is always in a run), attaches
# `perf record -g -a` for the run (SECONDS per load), and prints where ringway's
# threads spent it: the split by object (kernel, ringway, libc) and the top symbols. Needs root,
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
# The whole machine for the whole run (DIRECT's turn too: ringway idles then), and
# then ringway's threads alone.
perf record -q -F 999 -g -a -o "$out/perf.data" 2>/dev/null &
perf=$!
RINGWAY_BIN=$PWD/target/release/ringway ../shared/peerbench/run-all.sh \
    --only RINGWAY --tests "$test" --reps 1 --dur "$secs" >"$out/peerbench.log" 2>&1 || true
kill -INT "$perf"
wait "$perf" || true
grep -E "^RINGWAY|^DIRECT|^target" "$out/peerbench.log" || true
# ringway's threads (comm ringway, ringway-wN, ringway-log): the share of their samples
# per object, then per symbol. (`perf report --comms` drops kernel samples in some
# views; grouping by comm here does not.)
perf report -i "$out/perf.data" --no-children --stdio --sort comm,dso,sym 2>/dev/null \
    | grep -E '^ +[0-9]' \
    | awk -v top="${TOP:-25}" -v test="$test" '
        $2 ~ /^ringway/ {
            p = $1; sub("%", "", p); sym = $5; for (i = 6; i <= NF; i++) sym = sym " " $i
            by_dso[$3] += p; by_sym[$3 " " sym] += p; total += p
        }
        END {
            if (total == 0) { print "no samples of ringway threads"; exit 1 }
            print "== " test ": ringway threads, share of their CPU samples by object"
            for (d in by_dso) printf "%6.1f%%  %s\n", 100 * by_dso[d] / total, d | "sort -rn"
            close("sort -rn")
            print "== " test ": top symbols"
            for (s in by_sym) printf "%6.1f%%  %s\n", 100 * by_sym[s] / total, s | "sort -rn | head -n " top
        }'
echo "(perf data and the harness log in $out)"
