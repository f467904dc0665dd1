#!/usr/bin/env bash
# DNS through ringway's UDP kernel path at tc and at XDP, on veth (native XDP), with
# the whole machine's CPU per query. Client and backend each live in a network
# namespace of their own, joined to this one by a veth pair; this namespace routes
# between them (the direct row) or runs ringway in between.
#   scripts/udp-veth-ab.sh [RINGWAY_BIN]     (root; apt-get install -y unbound dnsperf ethtool)
# Rows: direct (routed here), ringway userspace, kernel path at tc, kernel path at
# XDP (udp_kernel_xdp names the two veths). DUR seconds each (default 5); dnsperf
# -c 8 -T 2 -q 100, udp_responses = 1 and none. The veths in the namespaces send
# whole checksums (tx checksumming off: XDP rewrites checksums incrementally from the
# frame) and have GRO on (a veth takes XDP_REDIRECTed frames only then); every row
# runs with the same settings.
set -euo pipefail
BIN=${1:-target/release/ringway}
DUR=${DUR:-5}
W=$(mktemp -d /tmp/veth-ab.XXXXXX)
C=vabc$$ B=vabb$$
cleanup() {
    [ -n "${RW:-}" ] && kill "$RW" 2>/dev/null || true
    [ -n "${UB:-}" ] && kill "$UB" 2>/dev/null || true
    ip netns del $C 2>/dev/null || true
    ip netns del $B 2>/dev/null || true
    ip link del vabc 2>/dev/null || true
    ip link del vabb 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
ip netns add $C; ip netns add $B
ip link add vabc type veth peer name eth0 netns $C
ip link add vabb type veth peer name eth0 netns $B
ip addr add 10.77.1.1/24 dev vabc; ip link set vabc up
ip addr add 10.77.2.1/24 dev vabb; ip link set vabb up
for ns in $C $B; do
    ip -n $ns link set lo up; ip -n $ns link set eth0 up
    ip netns exec $ns ethtool -K eth0 tx off gro on >/dev/null
done
ethtool -K vabc tx off gro on >/dev/null; ethtool -K vabb tx off gro on >/dev/null
ip -n $C addr add 10.77.1.2/24 dev eth0; ip -n $C route add default via 10.77.1.1
ip -n $B addr add 10.77.2.2/24 dev eth0; ip -n $B route add default via 10.77.2.1
sysctl -qw net.ipv4.ip_forward=1
. "$(dirname "$0")/bench-unbound.sh"
bench_unbound "$W" 10.77.2.2 53 0.0.0.0/0
ip netns exec $B unbound -d -c "$W/unbound.conf" >"$W/unbound.log" 2>&1 &
UB=$!
sleep 1
hz=$(getconf CLK_TCK)
row() { # name server
    local b0 b1 out q lost
    b0=$(busy)
    out=$(ip netns exec $C dnsperf -s "$2" -p 53 -d "$W/queries.txt" -c 8 -T 2 -q 100 -t 1 -l "$DUR" 2>&1)
    b1=$(busy)
    q=$(echo "$out" | awk '/Queries per second/{print int($4)}')
    lost=$(echo "$out" | awk '/Queries lost/{print $3}')
    awk -v n="$1" -v q="$q" -v l="$lost" -v d="$((b1 - b0))" -v hz="$hz" -v s="$DUR" \
        'BEGIN{printf "%-36s %8d qps  lost %-6s machine CPU %5.1f us/query\n", n, q, l, (d/hz)*1e6/(q*s)}'
}
run_rw() { # name forward responses xdp
    local resp=""
    [ "$3" != none ] && resp="udp_responses = $3"
    local xdp=""
    [ -n "$4" ] && xdp="udp_kernel_xdp = [$4]"
    cat >"$W/rw.toml" <<EOT
workers = 2
$xdp
worker_cpu_affinity = false
[metrics]
listen = "127.0.0.1:19199"
[[listener]]
name = "dns"
protocol = "udp"
listen = "10.77.1.1:53"
forward = "$2"
$resp
[[listener.backend]]
address = "10.77.2.2:53"
EOT
    "$BIN" run -c "$W/rw.toml" >"$W/rw.log" 2>&1 &
    RW=$!
    sleep 1.5
    row "$1" 10.77.1.1
    curl -s http://127.0.0.1:19199/metrics | awk '/^ringway_udp_kernel_datagrams_total/{k+=$2} /^ringway_udp_datagrams_total/{a+=$2} END{if (a) printf "    through the kernel: %.1f%% of %d datagrams\n", 100*k/a, a}'
    kill "$RW"; wait "$RW" 2>/dev/null || true; RW=
    grep -E "XDP|xdp|unavailable|error" "$W/rw.log" | head -3 || true
}
ip netns exec $C dnsperf -s 10.77.2.2 -d "$W/queries.txt" -l 1 >/dev/null 2>&1 || true
row "direct (routed)" 10.77.2.2
for resp in 1 none; do
    run_rw "ringway auto udp_responses=$resp" auto $resp ""
    run_rw "ringway kernel tc udp_responses=$resp" kernel $resp ""
    run_rw "ringway kernel xdp udp_responses=$resp" kernel $resp '"vabc", "vabb"' 
done
row "direct (routed, again)" 10.77.2.2
