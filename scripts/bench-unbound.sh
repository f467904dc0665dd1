# Sourced by the DNS benchmarks (scripts/dns-ab.sh, scripts/udp-veth-ab.sh): what they
# share.
#   bench_unbound DIR ADDRESS PORT ALLOWED: DIR/unbound.conf, an unbound answering 20
#   names of bench.test. from local data only on ADDRESS:PORT to clients in ALLOWED (a
#   prefix), and DIR/queries.txt, dnsperf's queries for them.
#   busy: the whole machine's busy CPU time so far, in USER_HZ (/proc/stat).
bench_unbound() {
    local dir=$1 address=$2 port=$3 allowed=$4
    {
        echo 'server:'
        echo "  interface: $address@$port"
        echo "  port: $port"
        echo '  do-daemonize: no'
        echo '  chroot: ""'
        echo '  username: ""'
        echo '  pidfile: ""'
        echo "  directory: \"$dir\""
        echo '  use-syslog: no'
        echo '  logfile: ""'
        echo '  num-threads: 2'
        echo '  so-reuseport: yes'
        echo '  do-ip6: no'
        echo '  do-tcp: no'
        echo "  access-control: $allowed allow"
        echo '  module-config: "iterator"'
        echo '  minimal-responses: yes'
        echo '  local-zone: "." refuse'
        echo '  local-zone: "bench.test." static'
        for i in $(seq 1 20); do echo "  local-data: \"h$i.bench.test. 300 IN A 192.0.2.$i\""; done
        echo 'remote-control:'
        echo '  control-enable: no'
    } >"$dir/unbound.conf"
    for i in $(seq 1 20); do echo "h$i.bench.test A"; done >"$dir/queries.txt"
}

busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
