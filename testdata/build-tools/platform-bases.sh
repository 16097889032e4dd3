#!/bin/sh
# Makes busybox base images for the platforms-* build cases, offline for the
# tests: DIR/<arch>.tar (a root filesystem like the harness's own base:
# Debian's busybox-static for that architecture, its applet links,
# /etc/passwd and /etc/group) for amd64 and arm64.
#
# Usage: platform-bases.sh DIR. Needs the network once (apt-get download)
# and, for arm64 on an amd64 machine, `dpkg --add-architecture arm64 &&
# apt-get update` first (.ci/run does both). The tests look for DIR in
# $KILN_TEST_BASES (default /var/tmp/kiln-test-bases).
set -eu
dir=${1:?usage: platform-bases.sh DIR}
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for arch in amd64 arm64; do
    [ -s "$dir/$arch.tar" ] && continue
    (cd "$work" && apt-get download -q "busybox-static:$arch" >"$work/log" 2>&1) || {
        cat "$work/log" >&2
        echo "apt-get download busybox-static:$arch failed" >&2
        exit 1
    }
    deb=$(ls "$work"/busybox-static_*_"$arch".deb)
    dpkg-deb -x "$deb" "$work/x-$arch"
    root="$work/root-$arch"
    mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp"
    cp "$work/x-$arch/bin/busybox" "$root/bin/busybox"
    # The applet list is the same for every architecture of one version;
    # the host's busybox gives it without emulation.
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    chmod 1777 "$root/tmp"
    chmod 700 "$root/root"
    tar --sort=name --mtime=@1600000000 --owner=0 --group=0 --numeric-owner \
        -C "$root" -cf "$dir/$arch.tar.tmp" .
    mv "$dir/$arch.tar.tmp" "$dir/$arch.tar"
    rm -f "$deb"
done
ls -l "$dir"
