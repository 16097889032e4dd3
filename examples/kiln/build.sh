#!/usr/bin/env bash
# Builds kiln's image with kiln: the static binary (examples/build-static.sh),
# Debian's busybox-static and this machine's CA bundle as the context.
#   examples/kiln/build.sh [kiln build flags...]
# e.g. `examples/kiln/build.sh -t registry.example.com/kiln:1 --push`, or
# `-o type=docker,dest=kiln.tar` for `docker load`. Runs the kiln it built
# (as root: namespaces), or $KILN.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
static=${KILN_STATIC:-$(bash "$here/../build-static.sh")}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$static" "$ctx/kiln"
cp /bin/busybox "$ctx/busybox"
cp "${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" "$ctx/ca-certificates.crt"
"${KILN:-$static}" build -f "$here/Dockerfile" "$@" "$ctx"
