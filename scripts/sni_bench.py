#!/usr/bin/env python3
"""What routing by TLS server name costs per new connection: ringway with `route_by =
"sni"` beside its plain listener, and HAProxy (`req.ssl_sni`) and NGINX (`ssl_preread` +
`map`) each beside their own plain proxy, all to the same TLS backend, in one run.

wrk opens a new TLS connection per request (`Connection: close`, a full handshake, its
server name web.example) through each proxy to an NGINX HTTPS backend (P-256
certificate) serving 64 bytes; DIRECT is wrk to the backend itself. Rows run one after
another, in rotated order, REPS times; the table gives medians of connections/s and of
the CPU time per connection of the proxy under test only (utime+stime of its process
tree, from /proc), each -sni row against its proxy's plain row.

    cargo build --release && sudo python3 scripts/sni_bench.py [--dur 5] [--reps 3]

Needs root (wrk runs in a mount namespace whose /etc/hosts names web.example
127.0.0.1, so it sends that name), haproxy, nginx, libnginx-mod-stream, wrk and the
openssl CLI. Loopback only; every load run is bounded by --dur.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy_bench import (  # noqa: E402
    RINGWAY, STREAM_MODULE, cpu_seconds, free_port, nginx_http, start, stop, wrk_result,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.path.join(ROOT, "tests", "fixtures", "tls_lab.py")
NAME = "web.example"


def ringway(d, port, backend, sni):
    route = (
        f'route_by = "sni"\n[[listener.route]]\nsni = ["{NAME}", "*.{NAME}"]\npool = "web"\n'
        if sni
        else 'default_pool = "web"\n'
    )
    with open(f"{d}/ringway.toml", "w") as f:
        f.write(
            f'workers = 2\n[[pool]]\nname = "web"\n[pool.health]\ncheck = "none"\n'
            f'[[pool.backend]]\naddress = "127.0.0.1:{backend}"\n'
            f'[[listener]]\nname = "tls"\nlisten = "127.0.0.1:{port}"\n{route}'
        )
    return [RINGWAY, "run", "--config", f"{d}/ringway.toml"]


def haproxy(d, port, backend, sni):
    front = (
        "  tcp-request inspect-delay 5s\n"
        "  tcp-request content accept if { req.ssl_hello_type 1 }\n"
        f"  use_backend be if {{ req.ssl_sni -i {NAME} }}\n"
        if sni
        else "  default_backend be\n"
    )
    with open(f"{d}/haproxy.cfg", "w") as f:
        f.write(
            f"global\n  nbthread 2\n  maxconn 9400\ndefaults\n  mode tcp\n  timeout connect 5s\n"
            f"  timeout client 120s\n  timeout server 120s\nfrontend fe\n"
            f"  bind 127.0.0.1:{port}\n  backlog 4096\n{front}"
            f"backend be\n  server s1 127.0.0.1:{backend}\n"
        )
    return ["haproxy", "-db", "-f", f"{d}/haproxy.cfg"]


def nginx_stream(d, port, backend, sni):
    if sni:
        server = (
            f"map $ssl_preread_server_name $up {{ {NAME} web; default web; }}\n"
            f"upstream web {{ server 127.0.0.1:{backend}; }}\n"
            f"server {{ listen 127.0.0.1:{port} backlog=4096; ssl_preread on; proxy_pass $up; "
            "proxy_connect_timeout 5s; proxy_timeout 120s; }"
        )
    else:
        server = (
            f"server {{ listen 127.0.0.1:{port} backlog=4096; proxy_pass 127.0.0.1:{backend}; "
            "proxy_connect_timeout 5s; proxy_timeout 120s; }"
        )
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(
            f"load_module {STREAM_MODULE};\nuser root;\nworker_processes 2;\n"
            f"worker_rlimit_nofile 20000;\ndaemon off;\npid {d}/nginx.pid;\n"
            f"error_log {d}/error.log warn;\nevents {{ worker_connections 19900; }}\n"
            f"stream {{ {server} }}\n"
        )
    return ["nginx", "-p", d, "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log"]


# (name, proxy or None for DIRECT, reads the server name)
ROWS = [
    ("DIRECT", None, False),
    ("RINGWAY", ringway, False),
    ("RINGWAY-sni", ringway, True),
    ("HAPROXY", haproxy, False),
    ("HAPROXY-sni", haproxy, True),
    ("NGINX", nginx_stream, False),
    ("NGINX-sni", nginx_stream, True),
]


def wrk(port, dur, hosts):
    script = (
        f"mount --bind {hosts} /etc/hosts && exec timeout {dur + 30} wrk -t2 -c50 -d{dur}s "
        f"-H 'Connection: close' https://{NAME}:{port}/tiny"
    )
    out = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return wrk_result(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dur", type=int, default=5, help="seconds per load run")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    for tool in ("haproxy", "nginx", "wrk", "openssl", "unshare"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            raise SystemExit(f"missing {tool}: see scripts/bench.sh for the apt-get line")
    if os.geteuid() != 0:
        raise SystemExit("needs root (a mount namespace for wrk's /etc/hosts)")
    if not os.path.exists(RINGWAY):
        raise SystemExit("build first: cargo build --release")
    base = tempfile.mkdtemp(prefix="sni-bench-")
    certs = f"{base}/certs"
    subprocess.run([sys.executable, LAB, "certs", certs, f"web={NAME},*.{NAME}"], check=True)
    hosts = f"{base}/hosts"
    with open(hosts, "w") as f:
        f.write(f"127.0.0.1 {NAME}\n")
    log = open(f"{base}/log.txt", "w")
    procs = []
    try:
        d = f"{base}/backend"
        os.makedirs(d)
        backend = free_port()
        procs.append(start(nginx_http(d, backend, False, certs), backend, log))
        results = {name: [] for name, _, _ in ROWS}
        for rep in range(args.reps):
            order = ROWS[rep % len(ROWS):] + ROWS[: rep % len(ROWS)]
            for name, make, sni in order:
                if make is None:
                    time.sleep(0.3)
                    rate, bad = wrk(backend, args.dur, hosts)
                    results[name].append((rate, 0.0, bad))
                    print(f"rep {rep + 1} {name:<12} {rate:9.0f} conn/s {bad}", file=sys.stderr,
                          flush=True)
                    continue
                d = f"{base}/{name}-{rep}"
                os.makedirs(d)
                port = free_port()
                proc = start(make(d, port, backend, sni), port, log)
                try:
                    time.sleep(0.3)
                    cpu0 = cpu_seconds(proc.pid)
                    rate, bad = wrk(port, args.dur, hosts)
                    cpu = cpu_seconds(proc.pid) - cpu0
                finally:
                    stop(proc)
                us = cpu / (rate * args.dur) * 1e6
                results[name].append((rate, us, bad))
                print(f"rep {rep + 1} {name:<12} {rate:9.0f} conn/s {us:6.1f} us CPU/conn {bad}",
                      file=sys.stderr, flush=True)
        print(f"\nnew TLS connections through each proxy, {args.dur} s x {args.reps} reps, medians"
              f" ({os.cpu_count()} CPUs; CPU of the proxy under test only)")
        print(f"{'row':<12} {'conn/s':>9} {'vs plain':>9} {'CPU us/conn':>12} {'vs plain':>9}  errors")
        for name, make, _ in ROWS:
            rate = statistics.median(r[0] for r in results[name])
            errs = "; ".join(sorted({r[2] for r in results[name] if r[2]})) or "-"
            if make is None:
                print(f"{name:<12} {rate:9.0f} {'':>9} {'-':>12} {'':>9}  {errs}")
                continue
            us = statistics.median(r[1] for r in results[name])
            plain = results[name.split("-")[0]]
            prate = statistics.median(r[0] for r in plain)
            pus = statistics.median(r[1] for r in plain)
            print(f"{name:<12} {rate:9.0f} {rate / prate:8.2f}x {us:12.1f} {us / pus:8.2f}x  {errs}")
    finally:
        for p in procs:
            stop(p)
        log.close()


if __name__ == "__main__":
    main()
