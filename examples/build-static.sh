#!/usr/bin/env bash
# Builds a statically linked kiln (glibc, crt-static, libseccomp's static
# archive): the binary of kiln's image, which --isolation=container needs
# (the build replaces /lib). Prints its path. Needs libseccomp-dev.
#   PROFILE=release (default) or dev.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=${LIBSECCOMP_LIB_PATH:-/usr/lib/$(gcc -print-multiarch)} \
    cargo build -q --profile "$profile" -p kiln-cli --target "$triple" >&2
dir=$profile; [ "$profile" = dev ] && dir=debug
out=${CARGO_TARGET_DIR:-$PWD/target}/$triple/$dir/kiln
if ldd "$out" 2>&1 | grep -q '=>'; then
    echo "build-static.sh: $out is not static:" >&2; ldd "$out" >&2; exit 1
fi
echo "$out"
