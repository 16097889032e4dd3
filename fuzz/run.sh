#!/usr/bin/env bash
# Runs every fuzz target, N seconds in all (default 60) shared equally, each
# seeded from testdata/:
#   parse_plan    the frontend           (every Dockerfile)
#   dockerignore  .dockerignore matching (every .dockerignore, NUL, the paths of its case)
#   layer_tar     layer unpack/whiteouts, ADD extraction, layer export
#                 (the hostile tars of build-tools/hostile-tars.py)
#   image_json    image configs, manifests, indexes (testdata/oci/config/*)
#   gzip_blocks   layer gzip round trips (blocks with and without matches)
# Only stable Rust is available here, so nightly-only flags are unlocked with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags). A crash leaves its input in
# fuzz/artifacts/<target>/; turn it into a regression case (for the frontend,
# testdata/fuzz-regressions/<name>/Dockerfile).
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
targets=(parse_plan dockerignore layer_tar image_json gzip_blocks)
per=$(( seconds / ${#targets[@]} ))
[ "$per" -ge 1 ] || per=1

seed() { # seed TARGET FILE...
    local dir="corpus/$1" i=0
    shift
    mkdir -p "$dir"
    for f in "$@"; do
        cp "$f" "$dir/seed-$i"
        i=$((i + 1))
    done
}
mapfile -d '' dockerfiles < <(find ../testdata -name Dockerfile -print0)
seed parse_plan "${dockerfiles[@]}"
mkdir -p corpus/dockerignore
i=0
while IFS= read -r -d '' f; do
    { cat "$f"; printf '\0'; (cd "$(dirname "$f")" && find . | sed 's|^\./||'); } > "corpus/dockerignore/seed-$i"
    i=$((i + 1))
done < <(find ../testdata -name .dockerignore -print0)
tars=$(mktemp -d)
python3 ../testdata/build-tools/hostile-tars.py "$tars" > /dev/null
seed layer_tar "$tars"/*.tar
rm -rf "$tars"
mapfile -d '' jsons < <(find ../testdata/oci -name '*.json' -print0)
seed image_json "${jsons[@]}"
mkdir -p corpus/gzip_blocks

cargo fuzz build --sanitizer address
for t in "${targets[@]}"; do
    echo "fuzz $t for ${per} s"
    cargo fuzz run --sanitizer address "$t" "corpus/$t" -- \
        -max_total_time="$per" -max_len=8192 -timeout=10 -rss_limit_mb=2048
done
