#!/usr/bin/env bash
# A real S3-compatible server on loopback for the build cases: Ceph's RADOS
# Gateway (Debian's radosgw, Ceph 16 "pacific", run in production), on a
# throw-away single-node cluster (one monitor, one OSD whose objectstore is
# memstore: everything in memory, nothing on a disk).
#
#   s3-server.sh start DIR   prints HOST:PORT once the gateway answers; a
#                            user (access key KILNTESTACCESSKEY, secret
#                            kilntestsecretkey) and the bucket ci-cache exist;
#                            the gateway's request log is DIR/client.rgw.log
#   s3-server.sh stop DIR    stops the daemons started in DIR
set -euo pipefail
cmd=${1:?usage: s3-server.sh start|stop DIR}
D=${2:?usage: s3-server.sh start|stop DIR}
KEY=KILNTESTACCESSKEY
SECRET=kilntestsecretkey

# The Ceph daemons whose configuration is FILE (every daemon here is started
# with `-c FILE`; a daemon that had not written its pid file yet is found too).
daemons_of() {
    local want=$1 pid conf
    for pid in $(pgrep -x 'ceph-mon|ceph-osd|radosgw' || true); do
        conf=$(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | sed -n '/^-c$/{n;p;q}') || continue
        [ "$conf" = "$want" ] && echo "$pid"
    done
    return 0
}

if [ "$cmd" = stop ]; then
    pids=$(daemons_of "$D/ceph.conf")
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    sleep 1
    pids=$(daemons_of "$D/ceph.conf")
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    exit 0
fi

# Two clusters set up at once on one machine were seen to cross (an OSD
# told "wrong fsid" by the other cluster's monitor): cases that start a
# server at the same time take turns until their gateway answers.
exec 9>"${TMPDIR:-/tmp}/kiln-test-s3-server.lock"
flock 9
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
stop() {
    local pids
    pids=$(daemons_of "$D/ceph.conf")
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    return 0
}
# Daemons of a case that ended without stopping its server (its directory
# is gone) keep calling their monitor's port; a new cluster given that port
# would hear from them ("wrong fsid"). They are nobody's: stop them.
reap_orphans() {
    local pid conf
    for pid in $(pgrep -x 'ceph-mon|ceph-osd|radosgw' || true); do
        conf=$(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | sed -n '/^-c$/{n;p;q}') || continue
        [ -n "$conf" ] && [ ! -e "$conf" ] && { kill -9 "$pid" 2>/dev/null || true; }
    done
    return 0
}
reap_orphans
req="python3 $(dirname "$(readlink -f "$0")")/s3-request.py"

# One attempt on fresh ports; any failed step fails it (each step bounded: a
# daemon that cannot reach the monitor retries for minutes). Every command
# is given the configuration: radosgw does not read $CEPH_CONF.
attempt() {
    MON_PORT=$(free_port)
    PORT=$(free_port)
    mkdir -p "$D/mon" "$D/osd" "$D/run"
    FSID=$(python3 -c 'import uuid; print(uuid.uuid4())')
    cat > "$D/ceph.conf" <<CONF
[global]
fsid = $FSID
mon host = v1:127.0.0.1:$MON_PORT
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
ms bind msgr2 = false
osd objectstore = memstore
memstore device bytes = 1073741824
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail crit = 0
mon data avail warn = 0
run dir = $D/run
log file = $D/\$name.log
admin socket = $D/run/\$name.asok
pid file = $D/run/\$name.pid
keyring = $D/keyring
osd data = $D/osd
mon data = $D/mon
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$PORT
CONF
    local c=(-c "$D/ceph.conf")
    ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' &&
    ceph-authtool "$D/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' &&
    ceph-authtool "$D/keyring" --gen-key -n client.rgw --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' &&
    monmaptool --create --addv a "[v1:127.0.0.1:$MON_PORT]" --fsid "$FSID" "$D/monmap" &&
    ceph-mon "${c[@]}" --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring" &&
    timeout 20 ceph-mon "${c[@]}" -i a || return 1
    local osd
    osd=$(timeout 30 ceph "${c[@]}" osd create) && [ -n "$osd" ] || return 1
    timeout 20 ceph-osd "${c[@]}" -i "$osd" --mkfs &&
    timeout 20 ceph-osd "${c[@]}" -i "$osd" &&
    timeout 20 ceph "${c[@]}" osd crush add "osd.$osd" 1 root=default host=localhost &&
    timeout 30 radosgw "${c[@]}" -n client.rgw || return 1
    for _ in $(seq 1 60); do
        python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/', timeout=2)" 2>/dev/null && break
        sleep 1
    done
    timeout 20 radosgw-admin "${c[@]}" user create --uid=kiln --display-name=kiln \
        --access-key=$KEY --secret=$SECRET || return 1
    for _ in $(seq 1 30); do
        $req PUT "http://127.0.0.1:$PORT/ci-cache" && break
        sleep 1
    done
    $req GET "http://127.0.0.1:$PORT/ci-cache"
}

mkdir -p "$D"
# Three attempts: under load a step was seen to fail now and then.
for try in 1 2 3; do
    if attempt >> "$D/setup.log" 2>&1 < /dev/null; then
        flock -u 9
        exec 9>&-
        echo "127.0.0.1:$PORT"
        exit 0
    fi
    echo "attempt $try failed" >> "$D/setup.log"
    stop
    mkdir -p "$D/failed-$try"
    mv "$D"/*.log "$D/failed-$try/" 2>/dev/null || true
    rm -rf "$D/mon" "$D/osd" "$D/run" "$D/keyring" "$D/monmap"
done
echo "s3-server.sh: the S3 server did not come up in 3 attempts; see $D/setup.log and $D/failed-*:" >&2
tail -n 20 "$D/failed-3/setup.log" >&2 2>/dev/null || true
exit 1
