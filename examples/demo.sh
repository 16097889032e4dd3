#!/usr/bin/env bash
# kiln's demo, end to end on a fresh machine (as root):
#   1. builds kiln;
#   2. makes a busybox base image offline from Debian's busybox-static
#      (installed with apt-get if missing) and imports it with `kiln import`;
#   3. builds examples/demo (three stages, COPY --link, a heredoc, a non-root
#      user) into the local store and as an OCI archive;
#   4. runs the result's program from the exported filesystem, and rebuilds
#      to show every step cached.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "the demo needs root (namespaces and overlayfs): sudo $0" >&2
    exit 1
fi
if [ ! -x /bin/busybox ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
fi
cargo build --release -p kiln-cli
kiln=target/release/kiln
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export KILN_ROOT=${KILN_ROOT:-$work/state}

echo "== making a busybox base image"
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,root}
cp /bin/busybox "$rootfs/bin/"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\n' > "$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$work/busybox.tar" .
$kiln import "$work/busybox.tar" busybox:latest

echo "== building examples/demo"
$kiln build --progress=plain -t hello:demo \
    -o type=image -o type=oci,dest="$work/hello.oci.tar" -o type=local,dest="$work/fs" \
    examples/demo
echo "== running the image's program in its filesystem"
chroot "$work/fs" /usr/local/bin/hello --config /etc/hello.conf
echo "== the OCI archive"
tar -tf "$work/hello.oci.tar" | sed -n 1,5p
echo "== building the test stage (reuses the build stage from the cache)"
$kiln build --progress=plain --target test examples/demo
echo "== rebuilding: every step is cached"
$kiln build --progress=plain -t hello:demo examples/demo
