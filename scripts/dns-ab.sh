#!/usr/bin/env bash
# DNS through ringway, userspace against kernel path, with the whole machine's CPU per
# query (softirq work on the client's and the backend's side counts too).
#   scripts/dns-ab.sh [RINGWAY_BIN]      (root; apt-get install -y unbound dnsperf)
# Runs, each in a fresh network namespace against unbound (local data only): direct,
# then ringway with forward = "auto" and "kernel", each with udp_responses = 1 and
# without. DUR (default 5) seconds per run; dnsperf -c 8 -T 2 -q 100 -t 1, as peerbench.
set -euo pipefail
BIN=${1:-target/release/ringway}
DUR=${DUR:-5}
W=$(mktemp -d /tmp/dns-ab.XXXXXX)
NS=dnsab$$
trap 'ip netns del $NS 2>/dev/null || true; rm -rf "$W"' EXIT
. "$(dirname "$0")/bench-unbound.sh"
bench_unbound "$W" 127.0.0.1 9002 127.0.0.0/8

# run NAME PORT [LISTENER_KEYS]: one dnsperf run against PORT (9002: unbound itself).
run() {
    local name=$1 port=$2 keys=${3:-}
    ip netns add $NS
    ip netns exec $NS ip link set lo up
    ip netns exec $NS unbound -c "$W/unbound.conf" >"$W/unbound.log" 2>&1 &
    local ub=$! rw=
    if [[ $port != 9002 ]]; then
        printf 'workers = 2\nworker_cpu_affinity = false\n[[listener]]\nname = "dns"\nprotocol = "udp"\nlisten = "127.0.0.1:%s"\n%b\n[[listener.backend]]\naddress = "127.0.0.1:9002"\n[listener.health]\ncheck = "none"\n' \
            "$port" "$keys" >"$W/ringway.toml"
        ip netns exec $NS "$BIN" run --config "$W/ringway.toml" >"$W/ringway.log" 2>&1 &
        rw=$!
    fi
    sleep 1
    local b0 out b1
    b0=$(busy)
    out=$(ip netns exec $NS dnsperf -s 127.0.0.1 -p "$port" -d "$W/queries.txt" -l "$DUR" -c 8 -T 2 -q 100 -t 1 2>&1)
    b1=$(busy)
    local done lost qps
    done=$(awk '/Queries completed:/{print $3}' <<<"$out")
    lost=$(awk '/Queries lost:/{print $3}' <<<"$out")
    qps=$(awk '/Queries per second:/{printf "%.0f", $4}' <<<"$out")
    # /proc/stat counts in USER_HZ (100 per second).
    printf '%-34s %9s qps  lost %-5s machine CPU %5.1f us/query\n' "$name" "$qps" "$lost" \
        "$(awk -v j=$((b1 - b0)) -v q="$done" 'BEGIN{print j*10000/q}')"
    [[ -n $rw ]] && kill $rw 2>/dev/null
    kill $ub 2>/dev/null
    wait 2>/dev/null || true
    ip netns del $NS
}

run direct 9002
for resp in 'udp_responses = 1' ''; do
    for fwd in auto kernel; do
        run "ringway $fwd ${resp:-(no udp_responses)}" 20022 "forward = \"$fwd\"\n$resp"
    done
done
