#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 30), from its seed
# corpus (fuzz/corpus/TARGET/seed-*); stops at the first crash, which cargo-fuzz saves
# under fuzz/artifacts/TARGET/ with the command that replays it. Installs the nightly
# toolchain and cargo-fuzz when they are missing. See docs/FUZZING.md.
#
#     scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config proxy_header admin ring sni announce)
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in "${targets[@]}"; do
    corpus=$(mktemp -d)
    log=$(mktemp)
    # libFuzzer writes what it finds into the first corpus directory: a scratch one,
    # so the committed seeds stay as they are.
    status=0
    cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$corpus" fuzz/corpus/"$t" -- \
        -max_total_time="$secs" -print_final_stats=1 > "$log" 2>&1 || status=$?
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
    rm -rf "$corpus"
    if [ "$status" -ne 0 ]; then
        tail -60 "$log"
        echo "fuzz: $t failed (exit $status) after $runs runs; the input is under fuzz/artifacts/$t/"
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    echo "fuzz: $t: $runs runs in ${secs}s, no crash"
done
