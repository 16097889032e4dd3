#!/usr/bin/env bash
# --isolation=container against namespaces: one workload built with
# --no-cache, alternating (A B A B …) between a static kiln on the host
# (namespaces, overlayfs) and the same kiln in a container of kiln's image
# (docker's default confinement: --isolation=container). Prints one line per
# run, "MODE SECONDS"; the container's time is measured inside it (from
# /proc/uptime, 10 ms steps), without the engine's start-up.
#
#   benches/pod.sh KILN "DOCKER" IMAGE REGISTRY demo|realistic [PAIRS]
#
# KILN: examples/build-static.sh's binary; IMAGE: kiln's image loaded in
# that engine (examples/kiln/build.sh -o type=docker,...); REGISTRY: a
# loopback registry holding base/busybox:1 (realistic: this script
# debootstraps Debian bookworm and pushes base/debian:bookworm there).
set -euo pipefail
K=$1; D=$2; TAG=$3; REG=$4; WHAT=$5; N=${6:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/kiln-pod-bench.XXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/ctx" "$W/state-c"
case $WHAT in
demo)
    cp -r "$here/examples/demo/." "$W/ctx/"
    args=(--build-arg "BASE=$REG/base/busybox:1") ;;
realistic)
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    debootstrap --variant=minbase bookworm "$W/debian" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    tar --sort=name --numeric-owner -C "$W/debian" -cf "$W/debian.tar" .
    $K --root "$W/state-h" import "$W/debian.tar" debian:bookworm >/dev/null
    printf 'FROM debian:bookworm\n' > "$W/Dockerfile.debian"
    $K --root "$W/state-h" build -q -f "$W/Dockerfile.debian" -o type=oci,dest="$W/debian.oci.tar" "$W" >/dev/null
    skopeo copy -q --dest-tls-verify=false oci-archive:"$W/debian.oci.tar" docker://"$REG/base/debian:bookworm"
    cp -r "$here/testdata/build-realistic/context/." "$W/ctx/"
    sed -e "s|^FROM debian:bookworm|FROM $REG/base/debian:bookworm|" -e "s|^FROM busybox|FROM $REG/base/busybox:1|" \
        "$here/testdata/build-realistic/Dockerfile" > "$W/ctx/Dockerfile"
    args=() ;;
*) echo "usage: $0 KILN DOCKER IMAGE REGISTRY demo|realistic [PAIRS]" >&2; exit 2 ;;
esac
# Bases pulled and caches warm on both sides first.
$K --root "$W/state-h" build -q "${args[@]}" "$W/ctx" >/dev/null
$D run --rm --network=host -v "$W:/w" "$TAG" --root /w/state-c build -q "${args[@]}" /w/ctx >/dev/null
for _ in $(seq "$N"); do
    s=$(date +%s.%N)
    $K --root "$W/state-h" build -q --no-cache "${args[@]}" "$W/ctx" >/dev/null
    e=$(date +%s.%N)
    echo "namespaces $(echo "$e - $s" | bc)"
    out=$($D run --rm --network=host -v "$W:/w" --entrypoint sh "$TAG" -c \
        "read s x < /proc/uptime; kiln --root /w/state-c build -q --no-cache ${args[*]} /w/ctx >/dev/null; read e x < /proc/uptime; echo \$s \$e")
    echo "container $(echo "$out" | awk '{printf "%.2f", $2 - $1}')"
done
