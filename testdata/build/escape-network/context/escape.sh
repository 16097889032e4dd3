# What a RUN step tries against the host's network (the host-side
# canaries' ports are in /ctx/ports.env); prints only what does not depend
# on the host.
. /ctx/ports.env
echo "interfaces: $(ls /sys/class/net | tr '\n' ' ')"
grep -q '^nameserver' /etc/resolv.conf && echo "resolv.conf: nameservers" || echo "resolv.conf: no nameserver"
grep -Eq '^nameserver[[:space:]]+(127\.|::1)' /etc/resolv.conf && echo "resolv.conf: a loopback nameserver" || echo "resolv.conf: no loopback nameserver"
# a raw socket on every interface it has, while the host sends a
# Basic-auth header to its loopback service every 20 ms
/ctx/probe sniff 2 "Authorization: Basic"
echo "the host's loopback service at 127.0.0.1:"
/ctx/probe get 127.0.0.1 $LOOP_PORT
echo "the host's loopback service through the gateway:"
/ctx/probe get $(ip route | awk '/^default/ {print $3; exit}') $LOOP_PORT
echo "the host's loopback service, a hand-made frame for 127.0.0.1:"
/ctx/probe syn 127.0.0.1 $LOOP_PORT
echo "the host's loopback service, a hand-made frame for 0.0.0.0:"
/ctx/probe syn 0.0.0.0 $LOOP_PORT
echo "a service on the host's own address (outbound):"
/ctx/probe get $OUT_ADDR $OUT_PORT
# port 81: listen, let the host look at its own port 81, stop
/ctx/probe bind 81 120 > /tmp/bind &
i=0; until [ -s /tmp/bind ] || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done
cat /tmp/bind
rm -f /sync/probed; touch /sync/listening
i=0; until [ -e /sync/probed ] || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done
[ -e /sync/probed ] && echo "the host looked at its port 81" || echo "the host never looked at its port 81"
rm -f /sync/listening /sync/probed
kill $! 2>/dev/null; true
