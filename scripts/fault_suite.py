#!/usr/bin/env python3
"""The fault suite (issue 11): ringway between a client and three backends, each in a
network namespace of its own (veth links, 10.77.0.0/16), under a steady load of
checksummed transfers and short requests, while faults are injected one at a time:

  kill      a backend is SIGKILLed, then restarted
  stop      a backend is SIGSTOPped (the send/expect check notices), then SIGCONTed
  blackhole iptables DROP on a backend's port, then removed
  reset     ss -K resets a backend's established connections, three times
  flap      a backend's link goes down and up every second for 20 s
  sighup    ringway gets 20 SIGHUPs in a row
  nofile    ringway runs under prlimit --nofile=256 while 300 idle clients pile up
  memory    ringway runs in a memory-limited cgroup (48 MiB) during a UDP flood from
            65,536 sources and one busy one

Each scenario prints its figures (attempts, verified bytes, failures on the faulty
backend, errors on healthy ones, time until the faulty backend is avoided) and fails on
any error or lost byte on a healthy backend. A failure before a backend answered is
attributed with `ringway route`: to the backend the client's 5-tuple maps to with
every backend up. Needs root, iproute2, iptables, python3. About 2 minutes.

    python3 scripts/fault_suite.py [--bin target/debug/ringway] [--only kill,stop]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = f"rwf{os.getpid() % 100000}"
CLI, LB = f"{TAG}c", f"{TAG}l"
BACKENDS = [f"{TAG}b{i}" for i in (1, 2, 3)]
NAMES = ["b1", "b2", "b3"]
LB_IP, CLI_IP, CLI_IP2 = "10.77.0.2", "10.77.0.1", "10.77.0.3"
ADMIN = "10.77.250.2:9101"
METRICS = "10.77.250.2:9100"

# A backend: greets with its name, then echoes; passes the client's EOF back. UDP:
# answers "name|datagram".
BACKEND = r"""
import socket, sys, threading
name = sys.argv[1].encode()
def serve(c):
    try:
        c.sendall(name + b"\n")
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
        c.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        c.close()
def tcp():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 7000))
    s.listen(1024)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 7053))
    while True:
        d, peer = s.recvfrom(65536)
        s.sendto(name + b"|" + d, peer)
threading.Thread(target=udp, daemon=True).start()
tcp()
"""

# The load: THREADS clients for SECONDS, each connection alternating a 256 KiB
# transfer (sent and echoed back in 16 KiB chunks, every byte compared) and a 64-byte
# request; prints a JSON summary.
LOAD = r"""
import hashlib, json, os, socket, sys, threading, time
host, port, seconds, threads = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
out = {"attempts": 0, "ok": {}, "bytes": 0, "failures": []}
start = time.time()
def one(i, n):
    size = 256 * 1024 if n % 2 == 0 else 64
    data = hashlib.sha256(f"{i}-{n}".encode()).digest() * (size // 32)
    s = socket.socket()
    s.settimeout(5)
    name, stage, lport = None, "connect", None
    try:
        s.connect((host, port))
        lport = s.getsockname()[1]
        stage = "greeting"
        line = b""
        while not line.endswith(b"\n"):
            b = s.recv(1)
            if not b:
                raise OSError("closed before the greeting")
            line += b
        name = line.strip().decode()
        stage = "transfer"
        got = 0
        for off in range(0, size, 16384):
            chunk = data[off:off + 16384]
            s.sendall(chunk)
            back = b""
            while len(back) < len(chunk):
                b = s.recv(len(chunk) - len(back))
                if not b:
                    raise OSError("closed mid-transfer")
                back += b
            if back != chunk:
                raise OSError("corrupted bytes")
            got += len(chunk)
        s.shutdown(socket.SHUT_WR)
        if s.recv(1) != b"":
            raise OSError("no EOF after the transfer")
        with lock:
            out["ok"][name] = out["ok"].get(name, 0) + 1
            out["bytes"] += got
    except OSError as e:
        if lport is None:
            try:
                lport = s.getsockname()[1]
            except OSError:
                pass
        with lock:
            out["failures"].append({"port": lport, "backend": name, "stage": stage,
                                    "error": str(e), "t": round(time.time() - start, 3)})
    finally:
        s.close()
def run(i):
    n = 0
    while time.time() - start < seconds:
        with lock:
            out["attempts"] += 1
        one(i, n)
        n += 1
ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(out))
"""

# Idle clients that pile up: N connections held open for SECONDS.
HOLD = r"""
import socket, sys, time
host, port, n, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
held = []
for _ in range(n):
    try:
        s = socket.create_connection((host, port), timeout=2)
        held.append(s)
    except OSError:
        pass
print(len(held), flush=True)
time.sleep(seconds)
"""

# A UDP flood: every other datagram from one address (a new source port, so a new flow,
# each time), the others from 65,536 addresses of 10.78.0.0/16 in turn (IP_TRANSPARENT:
# sent, never answered), so the per-source table fills; and a legitimate client on
# another address asking once every 50 ms. Prints datagrams sent, questions asked and
# answered.
FLOOD = r"""
import socket, sys, threading, time
host, port, flood_ip, legit_ip, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
stop = time.time() + seconds
sent = 0
def flood():
    global sent
    while time.time() < stop:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if sent % 2:
                n = (sent // 2) % 65534 + 1  # 10.78.0.1 .. 10.78.255.254
                s.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT: any source
                s.bind((f"10.78.{n >> 8}.{n & 255}", 0))
            else:
                s.bind((flood_ip, 0))
            s.sendto(b"flood" * 20, (host, port))
            sent += 1
        finally:
            s.close()
threading.Thread(target=flood, daemon=True).start()
q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
q.bind((legit_ip, 0))
q.settimeout(0.5)
asked = answered = 0
while time.time() < stop:
    asked += 1
    q.sendto(b"legit", (host, port))
    try:
        q.recvfrom(2048)
        answered += 1
    except OSError:
        pass
    time.sleep(0.05)
print(f"{sent} {asked} {answered}")
"""


def run(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def nsx(ns, *args):
    return ["ip", "netns", "exec", ns, *args]


class Net:
    """The namespaces and links."""

    def __init__(self):
        self.spaces = [CLI, LB, *BACKENDS]

    def up(self):
        for ns in self.spaces:
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        # Thousands of short connections a second end in TIME_WAIT on the client and on
        # ringway's backend side: wider port ranges and reuse, as busy proxies set.
        for ns in (CLI, LB):
            run(*nsx(ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000",
                     "net.ipv4.tcp_tw_reuse=1"))
        self.link(CLI, f"{CLI_IP}/24", LB, f"{LB_IP}/24", "0")
        run("ip", "-n", CLI, "addr", "add", f"{CLI_IP2}/24", "dev", f"{TAG}x0")
        for i, ns in enumerate(BACKENDS, 1):
            self.link(LB, f"10.77.{i}.1/24", ns, f"10.77.{i}.2/24", str(i))
        # The control plane is reached from here, over a link of its own.
        run("ip", "link", "add", f"{TAG}r", "type", "veth", "peer", "name", f"{TAG}s")
        run("ip", "link", "set", f"{TAG}s", "netns", LB)
        run("ip", "addr", "add", "10.77.250.1/24", "dev", f"{TAG}r")
        run("ip", "link", "set", f"{TAG}r", "up")
        run("ip", "-n", LB, "addr", "add", "10.77.250.2/24", "dev", f"{TAG}s")
        run("ip", "-n", LB, "link", "set", f"{TAG}s", "up")

    @staticmethod
    def link(a, a_ip, b, b_ip, n):
        ea, eb = f"{TAG}x{n}", f"{TAG}y{n}"
        run("ip", "link", "add", ea, "type", "veth", "peer", "name", eb)
        run("ip", "link", "set", ea, "netns", a)
        run("ip", "link", "set", eb, "netns", b)
        run("ip", "-n", a, "addr", "add", a_ip, "dev", ea)
        run("ip", "-n", b, "addr", "add", b_ip, "dev", eb)
        run("ip", "-n", a, "link", "set", ea, "up")
        run("ip", "-n", b, "link", "set", eb, "up")

    def down(self):
        for ns in self.spaces:
            run("ip", "netns", "del", ns, check=False)
        run("ip", "link", "del", f"{TAG}r", check=False)


def config(udp_limits=""):
    backends = "".join(
        f'[[listener.backend]]\naddress = "10.77.{i}.2:7000"\nid = "b{i}"\n' for i in (1, 2, 3)
    )
    udp_backends = "".join(
        f'[[listener.backend]]\naddress = "10.77.{i}.2:7053"\nid = "u{i}"\n' for i in (1, 2, 3)
    )
    forward = f'forward = "{ARGS.forward}"' if ARGS.forward else ""
    # UDP has two modes: in ringway (auto) and kernel.
    udp_forward = forward if ARGS.forward in ("auto", "kernel") else ""
    return f"""workers = 2
shutdown_timeout = "2s"
[admin]
listen = "{ADMIN}"
[metrics]
listen = "{METRICS}"

[[listener]]
name = "t"
listen = "{LB_IP}:8000"
connect_timeout = "500ms"
max_connections = 2000
{forward}
[listener.health]
check = "send-expect"
send = "ping\\n"
expect = "b"
interval = "200ms"
timeout = "200ms"
rise = 2
fall = 2
{backends}
[[listener]]
name = "u"
protocol = "udp"
listen = "{LB_IP}:8053"
udp_max_flows = 2000
udp_idle_timeout = "2s"
{udp_forward}
{udp_limits}
[listener.health]
check = "udp"
send = "ping"
expect = "b"
interval = "500ms"
timeout = "300ms"
{udp_backends}"""


class Ringway:
    def __init__(self, binary, workdir, wrapper=(), udp_limits=""):
        self.conf = os.path.join(workdir, "ringway.toml")
        with open(self.conf, "w") as f:
            f.write(config(udp_limits))
        self.log = open(os.path.join(workdir, "ringway.log"), "w")
        self.proc = subprocess.Popen(
            nsx(LB, *wrapper, binary, "run", "-c", self.conf), stderr=self.log, stdout=self.log
        )
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                # TCP and UDP: a scenario starts with every backend up (the UDP
                # check's expect once matched no reply, and the UDP scenario ran with
                # every UDP backend down, passing by timing alone).
                if all(b["state"] == "up" for l in (0, 1) for b in backends_status(l)):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit("ringway did not come up with every backend up; log in " + self.log.name)

    def pid(self):
        # `ip netns exec` execs the command: the child is ringway (or its wrapper).
        return self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def get(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=2) as r:
        return r.read().decode()


def backends_status(listener=0):
    return json.loads(get(ADMIN, "/status"))["listeners"][listener]["backends"]


def metric(name, **labels):
    total = 0.0
    for line in get(METRICS, "/metrics").splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Backends:
    def __init__(self):
        self.procs = [None, None, None]
        for i in range(3):
            self.start(i)

    def start(self, i):
        self.procs[i] = subprocess.Popen(nsx(BACKENDS[i], sys.executable, "-c", BACKEND, NAMES[i]))

    def signal(self, i, sig):
        os.kill(self.procs[i].pid, sig)

    def kill(self, i):
        self.procs[i].kill()
        self.procs[i].wait()

    def stop_all(self):
        for p in self.procs:
            if p:
                p.kill()
                p.wait()


def start_load(seconds, threads=8):
    return subprocess.Popen(
        nsx(CLI, sys.executable, "-c", LOAD, LB_IP, "8000", str(seconds), str(threads)),
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_state(i, up, timeout):
    """Seconds until backend i is (not) up, or None."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if (backends_status()[i]["state"] == "up") == up:
                return time.time() - t0
        except OSError:
            pass
        time.sleep(0.05)
    return None


def attribute(conf, ports):
    """The backend each client port's connection maps to with every backend up."""
    if not ports:
        return {}
    stdin = "".join(f"{CLI_IP}:{p}\n" for p in ports)
    out = subprocess.run(
        [ARGS.bin, "route", "-c", conf, "--listener", "t", "--ids"],
        input=stdin, capture_output=True, text=True, check=True,
    ).stdout
    return {int(line.split()[0].rsplit(":", 1)[1]): line.split()[1] for line in out.splitlines()}


def judge(name, result, conf, faulty, avoided, extra=""):
    """Prints the scenario's figures; returns the errors on healthy backends."""
    unnamed = [f["port"] for f in result["failures"] if f["backend"] is None and f["port"]]
    owner = attribute(conf, unnamed)
    on_faulty, healthy = [], []
    for f in result["failures"]:
        who = f["backend"] or owner.get(f["port"], "?")
        (on_faulty if who == faulty else healthy).append({**f, "backend": who})
    ok = sum(result["ok"].values())
    av = "n/a" if avoided is None else f"{avoided:.2f} s"
    print(
        f"{name:<10} attempts {result['attempts']:>5}  ok {ok:>5}  "
        f"verified {result['bytes'] / 2**20:7.1f} MiB  on faulty {len(on_faulty):>3}  "
        f"errors on healthy {len(healthy):>2}  avoided after {av}{extra}"
    )
    for f in healthy[:5]:
        print(f"    healthy-backend error: {f}")
    return len(healthy)


def scenario_backend_fault(name, rw, backends, inject, heal, hold=3.0, faulty=0, expect_down=True):
    load = start_load(hold + 6)
    time.sleep(2)
    inject()
    avoided = wait_state(faulty, False, hold + 2) if expect_down else None
    time.sleep(max(0.0, hold - (avoided or 0)))
    heal()
    back = wait_state(faulty, True, 10) if expect_down else 0
    result = json.loads(load.communicate(timeout=60)[0])
    extra = "" if back is not None else "  (never came back up)"
    bad = judge(name, result, rw.conf, NAMES[faulty], avoided, extra)
    return bad + (1 if back is None else 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_bin = os.path.join(ROOT, "target/debug/ringway")
    if not os.path.exists(default_bin):
        default_bin = os.path.join(ROOT, "target/release/ringway")
    ap.add_argument("--bin", default=default_bin)
    ap.add_argument("--only", default="")
    ap.add_argument(
        "--forward",
        default="",
        help='the TCP listener\'s forward mode (auto, splice, copy, kernel), and the UDP listener\'s when auto or kernel; default: their default',
    )
    global ARGS
    ARGS = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("the fault suite needs root (network namespaces, iptables, cgroups)")
    for tool in ("ip", "iptables", "ss", "prlimit"):
        if not shutil.which(tool):
            sys.exit(f"the fault suite needs {tool}")
    only = set(filter(None, ARGS.only.split(",")))
    want = lambda s: not only or s in only  # noqa: E731
    net = Net()
    work = tempfile.mkdtemp(prefix="ringway-faults-")
    errors = 0
    started = time.time()
    net.up()
    backends = Backends()
    rw = None
    try:
        rw = Ringway(ARGS.bin, work)
        print(f"fault suite: ringway {ARGS.bin} (forward {ARGS.forward or 'default'}), 3 backends, 8 clients (256 KiB transfers"
              " and 64 B requests, every byte checked)")
        if want("kill"):
            errors += scenario_backend_fault(
                "kill", rw, backends,
                lambda: backends.kill(0), lambda: backends.start(0))
        if want("stop"):
            errors += scenario_backend_fault(
                "stop", rw, backends,
                lambda: backends.signal(0, signal.SIGSTOP),
                lambda: backends.signal(0, signal.SIGCONT))
        if want("blackhole"):
            rule = ["INPUT", "-p", "tcp", "--dport", "7000", "-j", "DROP"]
            errors += scenario_backend_fault(
                "blackhole", rw, backends,
                lambda: run(*nsx(BACKENDS[0], "iptables", "-A", *rule)),
                lambda: run(*nsx(BACKENDS[0], "iptables", "-D", *rule)))
        if want("reset"):
            def resets():
                for _ in range(3):
                    run(*nsx(BACKENDS[0], "ss", "-K", "-t", "state", "established", "sport", "= :7000"))
                    time.sleep(1)
            errors += scenario_backend_fault(
                "reset", rw, backends, resets, lambda: None, hold=3, expect_down=False)
        if want("flap"):
            dev = f"{TAG}x1"

            def flap():
                for _ in range(20):
                    run("ip", "-n", LB, "link", "set", dev, "down")
                    time.sleep(0.5)
                    run("ip", "-n", LB, "link", "set", dev, "up")
                    time.sleep(0.5)
            load = start_load(26)
            time.sleep(2)
            t = threading.Thread(target=flap)
            t0 = time.time()
            t.start()
            avoided = wait_state(0, False, 5)
            t.join()
            back = wait_state(0, True, 10)
            result = json.loads(load.communicate(timeout=60)[0])
            errors += judge("flap", result, rw.conf, "b1", avoided and avoided,
                            f"  (20 flaps in {time.time() - t0:.0f} s)")
            errors += 0 if back is not None else 1
        if want("sighup"):
            load = start_load(6)
            time.sleep(1.5)
            for _ in range(20):
                os.kill(rw.pid(), signal.SIGHUP)
                time.sleep(0.01)
            result = json.loads(load.communicate(timeout=60)[0])
            time.sleep(0.5)
            alive = rw.proc.poll() is None
            with open(rw.log.name) as f:
                reloads = f.read().count("SIGHUP: reloading")
            errors += judge("sighup", result, rw.conf, None, None,
                            f"  ({reloads} reloads logged, alive: {alive})")
            errors += 0 if alive else 1
        if want("nofile"):
            rw.stop()
            rw = Ringway(ARGS.bin, work, wrapper=("prlimit", "--nofile=256:256"))
            load = start_load(8)
            hold = subprocess.Popen(
                nsx(CLI, sys.executable, "-c", HOLD, LB_IP, "8000", "300", "6"),
                stdout=subprocess.PIPE, text=True)
            scrapes = failed_scrapes = went_down = 0
            end = time.time() + 7
            while time.time() < end:
                scrapes += 1
                try:
                    metric("ringway_listener_connections_total")
                    went_down += sum(b["state"] != "up" for b in backends_status())
                except OSError:
                    failed_scrapes += 1
                time.sleep(0.25)
            held = hold.communicate(timeout=30)[0].strip()
            result = json.loads(load.communicate(timeout=60)[0])
            refused = metric("ringway_listener_rejected_connections_total", reason="fd_limit")
            # Clients refused at the door never reached a backend: not backend errors.
            result["failures"] = [f for f in result["failures"] if f["stage"] != "greeting"]
            errors += judge("nofile", result, rw.conf, None, None,
                            f"  ({held} idle held; {refused:.0f} refused fd_limit; "
                            f"{scrapes - failed_scrapes}/{scrapes} scrapes ok; backend-down samples {went_down})")
            errors += failed_scrapes + went_down
        if want("memory"):
            rw.stop()
            cg = cgroup(48 * 2**20)
            limits = 'udp_max_flows_per_source = 200\nudp_flow_rate_per_source = "2000/s"'
            rw = Ringway(ARGS.bin, work, udp_limits=limits)
            cg.join(rw.pid())
            load = start_load(8)
            flood = subprocess.Popen(
                nsx(CLI, sys.executable, "-c", FLOOD, LB_IP, "8053", CLI_IP, CLI_IP2, "7"),
                stdout=subprocess.PIPE, text=True)
            sent, asked, answered = map(int, flood.communicate(timeout=60)[0].split())
            result = json.loads(load.communicate(timeout=60)[0])
            alive = rw.proc.poll() is None
            dropped = {r: metric("ringway_udp_dropped_datagrams_total", reason=r)
                       for r in ("source_limit", "source_rate", "max_flows")}
            peak, ooms, hwm = cg.peak(), cg.oom_kills(), vm_hwm(rw.pid())
            tracked = json.loads(get(ADMIN, "/status"))["listeners"][1]["sources_tracked"]
            errors += judge("memory", result, rw.conf, None, None,
                            f"  (flood {sent} datagrams, dropped {dropped}; legit UDP client "
                            f"{answered}/{asked} answered; {tracked} sources tracked; cgroup "
                            f"peak {peak / 2**20:.1f} MiB of 48, peak RSS {hwm / 2**20:.1f} MiB; "
                            f"OOM kills {ooms}; alive: {alive})")
            errors += (0 if alive else 1) + ooms + (0 if answered >= asked * 0.9 else 1)
            rw.stop()
            rw = None
            cg.remove()
    finally:
        if rw:
            rw.stop()
        backends.stop_all()
        net.down()
    print(f"fault suite: {errors} error(s) on healthy backends or the control plane, "
          f"{time.time() - started:.0f} s; log in {work}")
    sys.exit(1 if errors else 0)


def vm_hwm(pid):
    """Peak resident memory of process `pid`, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class cgroup:
    """A memory-limited cgroup (v2 when mounted as such, else v1's memory controller)."""

    def __init__(self, limit):
        v2 = "/sys/fs/cgroup/cgroup.controllers"
        if os.path.exists(v2):
            self.dir, self.v2 = f"/sys/fs/cgroup/{TAG}", True
            os.mkdir(self.dir)
            self.write("memory.max", limit)
        else:
            self.dir, self.v2 = f"/sys/fs/cgroup/memory/{TAG}", False
            os.mkdir(self.dir)
            self.write("memory.limit_in_bytes", limit)

    def write(self, name, value):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(str(value))

    def read(self, name):
        with open(os.path.join(self.dir, name)) as f:
            return f.read()

    def join(self, pid):
        """Moves process `pid` (all its threads) in. From here: `ip netns exec` gives
        its command a /sys of its own, without the cgroup mounts."""
        self.write("cgroup.procs", pid)

    def peak(self):
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            return int(self.read(name))
        except OSError:
            return 0

    def oom_kills(self):
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in self.read(name).splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def remove(self):
        for _ in range(50):
            try:
                os.rmdir(self.dir)
                return
            except OSError:
                time.sleep(0.1)


if __name__ == "__main__":
    main()
