#!/usr/bin/env python3
"""What sending and accepting a PROXY protocol header cost per new connection, ringway
beside HAProxy and NGINX doing the same, in one run.

wrk opens a new connection per request (`Connection: close`) through each proxy to an
NGINX HTTP backend serving 64 bytes: a plain backend for the rows without a header, the
same server behind `listen ... proxy_protocol` for the `-v1`/`-v2` rows, which send one.
The `-behind` and `-accept` rows put an NGINX stream proxy in front of the proxy under
test, without and with `proxy_protocol on`; the `-accept` rows read that header. Rows
run one after another, in rotated order, REPS times; the table gives medians of
connections/s and of the CPU time per connection of the proxy under test only
(utime+stime of its process tree, from /proc), each against its baseline row.

    cargo build --release && python3 scripts/proxy_bench.py [--dur 5] [--reps 3]

Needs haproxy, nginx, libnginx-mod-stream and wrk (see scripts/bench.sh). Loopback only;
every load run is bounded by --dur.
"""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RINGWAY = os.path.join(ROOT, "target", "release", "ringway")
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"exited before listening on {port}: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}: {proc.args}")


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_seconds(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICK


def start(cmd, port, log):
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
    wait_port(port, proc)
    return proc


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def nginx_http(d, port, proxy_protocol, certs=None):
    """NGINX serving 64 bytes at /tiny; with `certs` (a dir with web.pem, web.key) over TLS."""
    os.makedirs(f"{d}/www", exist_ok=True)
    with open(f"{d}/www/tiny", "w") as f:
        f.write("x" * 63 + "\n")
    pp = " proxy_protocol" if proxy_protocol else ""
    tls = " ssl" if certs else ""
    cert = f"ssl_certificate {certs}/web.pem; ssl_certificate_key {certs}/web.key; " if certs else ""
    temps = "".join(
        f"  {k}_temp_path {d}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = f"""user root;
worker_processes 2;
worker_rlimit_nofile 20000;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
{temps}  server {{ listen 127.0.0.1:{port}{tls} backlog=4096{pp}; {cert}root {d}/www; location / {{ }} }}
}}
"""
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(conf)
    return ["nginx", "-p", d, "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log"]


def ringway(d, port, backend, send_proxy, accept):
    extra = f'send_proxy = "{send_proxy}"\n' if send_proxy else ""
    extra += "accept_proxy = true\n" if accept else ""
    with open(f"{d}/ringway.toml", "w") as f:
        f.write(
            f'workers = 2\n[[listener]]\nname = "b"\nlisten = "127.0.0.1:{port}"\n{extra}'
            f'[listener.health]\ncheck = "none"\n'
            f'[[listener.backend]]\naddress = "127.0.0.1:{backend}"\n'
        )
    return [RINGWAY, "run", "--config", f"{d}/ringway.toml"]


def haproxy(d, port, backend, send_proxy, accept):
    opt = {None: "", "v1": " send-proxy", "v2": " send-proxy-v2"}[send_proxy]
    bind_opt = " accept-proxy" if accept else ""
    with open(f"{d}/haproxy.cfg", "w") as f:
        f.write(
            f"global\n  nbthread 2\n  maxconn 9400\ndefaults\n  mode tcp\n  timeout connect 5s\n"
            f"  timeout client 120s\n  timeout server 120s\nfrontend fe\n"
            f"  bind 127.0.0.1:{port}{bind_opt}\n  backlog 4096\n  default_backend be\n"
            f"backend be\n  server s1 127.0.0.1:{backend}{opt}\n"
        )
    return ["haproxy", "-db", "-f", f"{d}/haproxy.cfg"]


def nginx_stream(d, port, backend, send_proxy, accept=False):
    pp = "proxy_protocol on;" if send_proxy else ""
    listen_opt = " proxy_protocol" if accept else ""
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(
            f"load_module {STREAM_MODULE};\nuser root;\nworker_processes 2;\n"
            f"worker_rlimit_nofile 20000;\ndaemon off;\npid {d}/nginx.pid;\n"
            f"error_log {d}/error.log warn;\nevents {{ worker_connections 19900; }}\n"
            f"stream {{ server {{ listen 127.0.0.1:{port} backlog=4096{listen_opt}; proxy_pass 127.0.0.1:{backend}; "
            f"proxy_connect_timeout 5s; proxy_timeout 120s; {pp} }} }}\n"
        )
    return ["nginx", "-p", d, "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log"]


# (name, proxy, header it sends, front: None, or whether the front sends a header)
ROWS = [
    ("RINGWAY", ringway, None, None),
    ("RINGWAY-v1", ringway, "v1", None),
    ("RINGWAY-v2", ringway, "v2", None),
    ("RINGWAY-behind", ringway, None, False),
    ("RINGWAY-accept", ringway, None, True),
    ("HAPROXY", haproxy, None, None),
    ("HAPROXY-v1", haproxy, "v1", None),
    ("HAPROXY-v2", haproxy, "v2", None),
    ("HAPROXY-behind", haproxy, None, False),
    ("HAPROXY-accept", haproxy, None, True),
    ("NGINX", nginx_stream, None, None),
    ("NGINX-v1", nginx_stream, "v1", None),
    ("NGINX-behind", nginx_stream, None, False),
    ("NGINX-accept", nginx_stream, None, True),
]


def baseline(name):
    """The row a row is compared with: the same proxy without the header."""
    proxy, _, variant = name.partition("-")
    return f"{proxy}-behind" if variant == "accept" else proxy


def wrk(port, dur):
    out = subprocess.run(
        ["timeout", str(dur + 30), "wrk", "-t2", "-c50", f"-d{dur}s", "--latency",
         "-H", "Connection: close", f"http://127.0.0.1:{port}/tiny"],
        capture_output=True, text=True, check=True,
    ).stdout
    return wrk_result(out)


def wrk_result(out):
    """wrk's requests/s, and its errors in words ("" when none)."""
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = (errors.group(1) if errors else "") + (f" non-2xx {non2xx.group(1)}" if non2xx else "")
    return rate, bad.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dur", type=int, default=5, help="seconds per load run")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    for tool in ("haproxy", "nginx", "wrk"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            raise SystemExit(f"missing {tool}: see scripts/bench.sh for the apt-get line")
    if not os.path.exists(RINGWAY):
        raise SystemExit("build first: cargo build --release")
    base = tempfile.mkdtemp(prefix="proxy-bench-")
    log = open(f"{base}/log.txt", "w")
    backends = {}
    procs = []
    try:
        for pp in (False, True):
            d = f"{base}/backend-{'pp' if pp else 'plain'}"
            os.makedirs(d)
            port = free_port()
            procs.append(start(nginx_http(d, port, pp), port, log))
            backends[pp] = port
        results = {name: [] for name, _, _, _ in ROWS}
        for rep in range(args.reps):
            order = ROWS[rep % len(ROWS):] + ROWS[: rep % len(ROWS)]
            for name, make, send_proxy, front in order:
                d = f"{base}/{name}-{rep}"
                os.makedirs(d)
                port = free_port()
                cmd = make(d, port, backends[send_proxy is not None], send_proxy, bool(front))
                proc = start(cmd, port, log)
                target, front_proc = port, None
                try:
                    if front is not None:
                        fd = f"{d}/front"
                        os.makedirs(fd)
                        target = free_port()
                        sends = "v1" if front else None
                        front_proc = start(nginx_stream(fd, target, port, sends), target, log)
                    time.sleep(0.3)
                    cpu0 = cpu_seconds(proc.pid)
                    rate, bad = wrk(target, args.dur)
                    cpu = cpu_seconds(proc.pid) - cpu0
                finally:
                    if front_proc:
                        stop(front_proc)
                    stop(proc)
                us = cpu / (rate * args.dur) * 1e6
                results[name].append((rate, us, bad))
                print(f"rep {rep + 1} {name:<14} {rate:9.0f} conn/s {us:6.1f} us CPU/conn {bad}",
                      file=sys.stderr, flush=True)
        print(f"\nnew connections through each proxy, {args.dur} s x {args.reps} reps, medians"
              f" ({os.cpu_count()} CPUs; CPU of the proxy under test only)")
        print(f"{'row':<14} {'conn/s':>9} {'vs baseline':>12} {'CPU us/conn':>12} {'vs baseline':>12}  errors")
        for name, _, _, _ in ROWS:
            rate = statistics.median(r[0] for r in results[name])
            us = statistics.median(r[1] for r in results[name])
            base_rows = results[baseline(name)]
            prate = statistics.median(r[0] for r in base_rows)
            pus = statistics.median(r[1] for r in base_rows)
            errs = "; ".join(sorted({r[2] for r in results[name] if r[2]})) or "-"
            print(f"{name:<14} {rate:9.0f} {rate / prate:11.2f}x {us:12.1f} {us / pus:11.2f}x  {errs}")
    finally:
        for p in procs:
            stop(p)
        log.close()


if __name__ == "__main__":
    main()
