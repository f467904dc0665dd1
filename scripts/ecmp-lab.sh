#!/usr/bin/env bash
# The scale-out lab (issue 13, first step): a client, a router, three ringway nodes and
# three backends, each in its own network namespace. Every node runs the same ringway
# config and BIRD 2, puts the service address (VIP) on its loopback and announces it
# over BGP (with BFD); the router's BIRD installs one multipath route to the VIP
# (`merge paths on`) and hashes flows on L4 (`fib_multipath_hash_policy = 1`). Nothing
# that BGP should route is routed by hand.
#
#   scripts/ecmp-lab.sh up [RINGWAY_BIN]   build it, wait for the multipath route
#   scripts/ecmp-lab.sh status             the router's route to the VIP, BGP sessions
#   scripts/ecmp-lab.sh hops               how many nexthops the router has for the VIP
#   scripts/ecmp-lab.sh withdraw N         node N withdraws its route (BIRD's uplink off)
#   scripts/ecmp-lab.sh announce N         node N announces it again
#   scripts/ecmp-lab.sh kill N             SIGKILL node N's ringway and BIRD
#   scripts/ecmp-lab.sh start N            start them again
#   scripts/ecmp-lab.sh down               remove everything
#
# The router: ECMP_ROUTER=plain (the default) lets BIRD install its multipath route
# (hash-threshold: when a nexthop goes, flows of healthy nexthops move too);
# ECMP_ROUTER=resilient has BIRD export to table 100 and a sidecar mirror that route's
# nexthops into a `type resilient` nexthop group, which the VIP's route in the main
# table uses (only the buckets of a nexthop that goes move).
#
# ECMP_SECOND_CHANCE=on gives every node the same `[cluster] peers` (the nodes'
# uplink addresses, 10.99.N.2): a node that receives a segment of a connection it does
# not hold passes it on to the node that does (second chance).
#
# ECMP_FORWARD=kernel puts both listeners in kernel mode (TCP sessions through sockmap,
# established UDP flows through the tc program); auto (the default) forwards in ringway.
#
# Needs root, iproute2, bird2 (`apt-get install -y bird2`), python3. Addresses:
# client 10.99.0.2 - router 10.99.0.1; router 10.99.N.1 - node N 10.99.N.2; node N
# 10.98.N.1 - backends 10.98.N.2; backends on 10.97.0.1-3; VIP 10.100.0.1 (TCP 80,
# UDP 53); each node's metrics and admin on its own 127.0.0.1:9100/9101.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=${ECMP_LAB_DIR:-/tmp/ecmp-lab}
P=ecmp                      # namespace prefix
VIP=10.100.0.1
NODES=(1 2 3)

ns() { ip netns exec "$P-$1" "${@:2}"; }

veth() { # veth NS_A ADDR_A NS_B ADDR_B NAME
    ip link add "$5a" type veth peer name "$5b"
    ip link set "$5a" netns "$P-$1"
    ip link set "$5b" netns "$P-$3"
    ns "$1" ip addr add "$2/30" dev "$5a"
    ns "$3" ip addr add "$4/30" dev "$5b"
    ns "$1" ip link set "$5a" up
    ns "$3" ip link set "$5b" up
}

bird_conf_router() {
    cat <<EOF
router id 10.99.0.1;
log "$LAB/router.bird.log" all;
protocol device { scan time 1; }
protocol kernel {
    ipv4 { export all; };
    merge paths on;      # one multipath route instead of the best path only
$( [[ $ROUTER == resilient ]] && echo "    kernel table 100;    # the sidecar mirrors it into a resilient group" )
}
protocol bfd { interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }
template bgp node {
    local as 65000;
    hold time 3; keepalive time 1;
    connect delay time 1; connect retry time 1; error wait time 1, 5;
    bfd on;
    ipv4 { import all; export none; };
}
EOF
    for n in "${NODES[@]}"; do
        echo "protocol bgp node$n from node { neighbor 10.99.$n.2 as 6500$n; }"
    done
}

bird_conf_node() {
    cat <<EOF
router id 10.99.$1.2;
log "$LAB/node$1.bird.log" all;
protocol device { scan time 1; }
protocol direct { ipv4; interface "lo"; }
protocol bfd { interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }
protocol bgp uplink {
    local as 6500$1;
    neighbor 10.99.$1.1 as 65000;
    hold time 3; keepalive time 1;
    connect delay time 1; connect retry time 1; error wait time 1, 5;
    bfd on;
    ipv4 { import none; export where net = $VIP/32; };
}
EOF
}

ringway_conf() {
    cat <<EOF
# The same file on every node: the ring, and so each flow's backend, is the same.
workers = 2
[metrics]
listen = "127.0.0.1:9100"
[admin]
listen = "127.0.0.1:9101"
$( [[ $SECOND_CHANCE == on ]] && printf '[cluster]\npeers = ["10.99.1.2", "10.99.2.2", "10.99.3.2"]\n' )

[[listener]]
name = "tcp"
listen = "$VIP:80"
$FORWARD_KEY
[listener.health]
check = "tcp"
interval = "500ms"
$(backends 8000)

[[listener]]
name = "udp"
protocol = "udp"
listen = "$VIP:53"
udp_idle_timeout = "30s"
$FORWARD_KEY
[listener.health]
check = "none"
$(backends 5300)
EOF
}

backends() { # backends PORT: the three backends' [[listener.backend]] tables
    for b in 1 2 3; do
        printf '[[listener.backend]]\naddress = "10.97.0.%s:%s"\nid = "b%s"\n' "$b" "$1" "$b"
    done
}

start_node() {
    local n=$1
    ns "node$n" bird -c "$LAB/node$n.bird.conf" -s "$LAB/node$n.ctl" -P "$LAB/node$n.bird.pid"
    # Not through the `ns` function: `$!` must be the process that execs ringway.
    ip netns exec "$P-node$n" "$BIN" run --config "$LAB/ringway.toml" \
        >"$LAB/node$n.ringway.log" 2>&1 &
    echo $! >"$LAB/node$n.ringway.pid"
}

kill_node() {
    local n=$1
    kill -KILL "$(cat "$LAB/node$n.ringway.pid")" 2>/dev/null || true
    kill -KILL "$(cat "$LAB/node$n.bird.pid")" 2>/dev/null || true
}

multipath_hops() { # how many nexthops the router has for the VIP
    if [[ $(cat "$LAB/router" 2>/dev/null) == resilient ]]; then
        ns router ip nexthop show id 100 2>/dev/null | sed -n 's/.*group \([^ ]*\).*/\1/p' \
            | tr '/' '\n' | grep -c . || true
    else
        ns router ip route show "$VIP" | grep -c nexthop || true
    fi
}

mirror() { # the resilient router's sidecar: BIRD's nexthops (table 100) -> group 100
    local last="" want
    set +e +o pipefail    # a loop that must outlive a missing table or an empty grep
    while true; do
        # (table 100 does not exist until BIRD first exports to it)
        want=$(ns router ip route show table 100 "$VIP" 2>/dev/null \
            | grep -o 'via 10\.99\.[0-9]*\.2' | sed 's/via 10\.99\.\([0-9]*\)\.2/\1/' \
            | sort -n | paste -sd/ -)
        if [[ $want != "$last" ]]; then
            if [[ -z $want ]]; then
                ns router ip route del "$VIP" 2>/dev/null || true
            else
                ns router ip nexthop replace id 100 group "$want" type resilient \
                    buckets 512 idle_timer 10
                ns router ip route replace "$VIP" nhid 100
            fi
            last=$want
        fi
        sleep 0.05
    done
}

up() {
    BIN=${1:-$ROOT/target/debug/ringway}
    [[ -x $BIN ]] || { echo "no ringway binary at $BIN (cargo build)" >&2; exit 2; }
    command -v bird >/dev/null || { echo "needs bird2: apt-get install -y bird2" >&2; exit 2; }
    down quiet
    mkdir -p "$LAB"
    echo "$BIN" >"$LAB/bin"
    echo "$ROUTER" >"$LAB/router"
    echo "$SECOND_CHANCE" >"$LAB/second_chance"
    for n in client router backends "${NODES[@]/#/node}"; do
        ip netns add "$P-$n"
        ns "$n" ip link set lo up
    done
    veth client 10.99.0.2 router 10.99.0.1 "${P}c"
    ns client ip route add default via 10.99.0.1
    ns router sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
    for n in "${NODES[@]}"; do
        # Second chance (and the UDP kernel path) route as the stack forwards, from the
        # interface a packet came in on: a node forwards (docs/scale-out.md).
        ns "node$n" sysctl -qw net.ipv4.conf.all.forwarding=1
        veth router 10.99.$n.1 "node$n" 10.99.$n.2 "${P}r$n"
        # The nodes reach each other through the router: room for second chance's IPIP
        # header (20 bytes) on top of a client's full-size segment (docs/scale-out.md).
        ns router ip link set "${P}r${n}a" mtu 1600
        ns "node$n" ip link set "${P}r${n}b" mtu 1600
        veth "node$n" 10.98.$n.1 backends 10.98.$n.2 "${P}b$n"
        ns "node$n" ip addr add "$VIP/32" dev lo
        ns "node$n" ip route add default via 10.99.$n.1
        ns "node$n" ip route add 10.97.0.0/24 via 10.98.$n.2
        # Replies to the client leave from the VIP, which the router reaches via BGP.
        bird_conf_node "$n" >"$LAB/node$n.bird.conf"
    done
    for b in 1 2 3; do ns backends ip addr add "10.97.0.$b/32" dev lo; done
    bird_conf_router >"$LAB/router.bird.conf"
    if [[ $ROUTER == resilient ]]; then
        # One nexthop object per node, in the group only while BIRD has the node's path.
        for n in "${NODES[@]}"; do
            ns router ip nexthop add id "$n" via "10.99.$n.2" dev "${P}r${n}a"
        done
        mirror >"$LAB/mirror.log" 2>&1 &
        echo $! >"$LAB/mirror.pid"
    fi
    ringway_conf >"$LAB/ringway.toml"
    ip netns exec "$P-backends" python3 "$ROOT/scripts/ecmp_backends.py" \
        >"$LAB/backends.log" 2>&1 &
    echo $! >"$LAB/backends.pid"
    ns router bird -c "$LAB/router.bird.conf" -s "$LAB/router.ctl" -P "$LAB/router.bird.pid"
    for n in "${NODES[@]}"; do start_node "$n"; done
    local deadline=$((SECONDS + 30))
    until [[ $(multipath_hops) -eq 3 ]]; do
        ((SECONDS < deadline)) || { echo "no 3-way multipath route to $VIP after 30 s" >&2; status; exit 1; }
        sleep 0.2
    done
    echo "ecmp lab up: $VIP via 3 nodes ($ROUTER router, second chance $SECOND_CHANCE)"
}

status() {
    ns router ip route show "$VIP" || true
    ns router ip nexthop show id 100 2>/dev/null || true
    birdc -s "$LAB/router.ctl" show protocols 2>/dev/null | grep -E "node|Name" || true
}

down() {
    if [[ -d $LAB ]]; then
        for f in "$LAB"/*.pid; do [[ -e $f ]] && kill -KILL "$(cat "$f")" 2>/dev/null || true; done
    fi
    # Anything still inside a lab namespace (a process outlives `ip netns del`).
    for n in client router backends "${NODES[@]/#/node}"; do
        ip netns pids "$P-$n" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    done
    for n in client router backends "${NODES[@]/#/node}"; do
        ip netns del "$P-$n" 2>/dev/null || true
    done
    [[ ${1:-} == quiet ]] || echo "ecmp lab down"
}

birdc_node() { birdc -s "$LAB/node$1.ctl" "${@:2}" >/dev/null; }

ROUTER=${ECMP_ROUTER:-plain}
SECOND_CHANCE=${ECMP_SECOND_CHANCE:-off}
FORWARD=${ECMP_FORWARD:-auto}
[[ $FORWARD == auto || $FORWARD == kernel ]] || { echo "ECMP_FORWARD: auto or kernel" >&2; exit 2; }
FORWARD_KEY="forward = \"$FORWARD\""
[[ $ROUTER == plain || $ROUTER == resilient ]] || { echo "ECMP_ROUTER: plain or resilient" >&2; exit 2; }

case ${1:-} in
    up) up "${2:-}" ;;
    status) status ;;
    hops) multipath_hops ;;
    withdraw) birdc_node "$2" disable uplink ;;
    announce) birdc_node "$2" enable uplink ;;
    kill) kill_node "$2" ;;
    start) BIN=$(cat "$LAB/bin"); start_node "$2" ;;
    down) down ;;
    *) sed -n '2,27p' "$0"; exit 2 ;;
esac
