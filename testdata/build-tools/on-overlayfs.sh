#!/bin/sh
# on-overlayfs.sh DIR COMMAND...: runs COMMAND (by sh -c) in a private mount
# namespace in which DIR/m is an overlayfs mount (upper dir DIR/u, kept from
# one call to the next): a state directory under DIR/m is on overlayfs, as
# in a container whose root filesystem is an overlay. DIR/m is made
# traversable for the user kilnci.
set -e
dir=$1
shift
mkdir -p "$dir/l" "$dir/u" "$dir/w" "$dir/m"
chmod 755 "$dir" "$dir/u"
exec unshare -m --propagation private sh -c '
    mount -t overlay overlay -o "lowerdir=$1/l,upperdir=$1/u,workdir=$1/w" "$1/m"
    shift
    exec sh -c "$*"
' on-overlayfs "$dir" "$@"
