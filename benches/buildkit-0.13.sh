#!/bin/bash
# A newer BuildKit to compare kiln with: docker 26.1.5 + buildx 0.13.1 from Debian trixie
# (BuildKit v0.13 built in, Dockerfile frontend 1.7), unpacked under /opt/docker26 and run as a
# second engine on its own socket and data root, beside (or without) bookworm's docker.io 20.10.
# Downloads with apt-get by package name; installs nothing system-wide. Idempotent.
# Prints the docker command to use, e.g.:
#   D=$(bash benches/buildkit-0.13.sh)
#   $D build --network=host -t x .     # the engine has no bridge: builds use the host network
#   $D save x -o x.tar
set -e
D=/opt/docker26; SOCK=/run/docker26/docker.sock
if [ ! -x $D/usr/sbin/dockerd ]; then
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  t=$(mktemp -d); mkdir -p "$t/lists/partial" "$t/cache/archives/partial"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s trixie main\n' "$mirror" > "$t/trixie.list"
  O=(-o Dir::Etc::sourcelist="$t/trixie.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$t/lists" -o Dir::Cache="$t/cache")
  apt-get "${O[@]}" update -qq >&2
  (cd "$t" && apt-get "${O[@]}" download docker.io docker-cli docker-buildx >&2 2>/dev/null)
  mkdir -p $D; for x in "$t"/*.deb; do dpkg-deb -x "$x" $D; done; rm -rf "$t"
  command -v containerd >/dev/null || { apt-get update -qq >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc >&2; }
fi
mkdir -p /root/.docker26/cli-plugins /var/lib/docker26 /run/docker26
P=/root/.docker26/cli-plugins/docker-buildx
cmp -s $D/usr/libexec/docker/cli-plugins/docker-buildx $P || { cp $D/usr/libexec/docker/cli-plugins/docker-buildx $P.tmp && mv $P.tmp $P; }
DC="env DOCKER_CONFIG=/root/.docker26 $D/usr/bin/docker -H unix://$SOCK"
if ! $DC info >/dev/null 2>&1; then
  PATH=$D/usr/bin:$D/usr/sbin:$PATH setsid dockerd --data-root /var/lib/docker26 --exec-root /run/docker26/exec \
    -H unix://$SOCK --pidfile /run/docker26/docker.pid --bridge=none --iptables=false --ip6tables=false \
    --insecure-registry 127.0.0.1:5000 > /tmp/dockerd26.log 2>&1 &
  for i in $(seq 60); do $DC info >/dev/null 2>&1 && break; sleep 0.5; done
  $DC info >/dev/null 2>&1 || { echo "dockerd 26 did not start: see /tmp/dockerd26.log" >&2; exit 1; }
fi
echo "$DC"
