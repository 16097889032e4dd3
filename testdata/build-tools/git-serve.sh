#!/bin/sh
# Serves the git repositories under DIR on git://127.0.0.1:PORT/ (git
# daemon, loopback only) for build cases; prints "serving" once it accepts
# connections. Stop it with `kill $(cat DIR/daemon.pid)`.
# Usage: git-serve.sh DIR PORT
set -eu
dir=$1 port=$2
# A daemon left by an earlier failed run would answer for a deleted tree.
if python3 -c "import socket,sys; sys.exit(socket.socket().connect_ex(('127.0.0.1', $port)) != 0)"; then
    echo "port $port is already in use" >&2
    exit 1
fi
git daemon --reuseaddr --export-all --base-path="$dir" --listen=127.0.0.1 \
    --port="$port" --pid-file="$dir/daemon.pid" --detach "$dir" \
    </dev/null >/dev/null 2>&1
python3 -c "import socket,time,sys; sys.exit(0 if any(socket.socket().connect_ex(('127.0.0.1', $port)) == 0 or time.sleep(0.1) for _ in range(50)) else 1)"
echo serving
