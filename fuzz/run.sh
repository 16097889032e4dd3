#!/usr/bin/env bash
# Runs the parse_plan fuzz target for N seconds (default 60), seeded with every
# Dockerfile in testdata/. Only stable Rust is available here, so nightly-only
# flags are unlocked with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags).
# A crash leaves its input in fuzz/artifacts/parse_plan/; turn it into a
# regression case under testdata/fuzz-regressions/<name>/Dockerfile.
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
corpus=corpus/parse_plan
mkdir -p "$corpus"
i=0
while IFS= read -r -d '' f; do
    cp "$f" "$corpus/seed-$i"
    i=$((i + 1))
done < <(find ../testdata -name Dockerfile -print0)
export RUSTC_BOOTSTRAP=1
exec cargo fuzz run --sanitizer address parse_plan "$corpus" -- \
    -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048
