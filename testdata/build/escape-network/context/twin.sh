# Two RUN steps of one build at once (stages a and b): each listens on
# port 8080 and waits, through the cache mount, until the other listens
# too. With a network namespace of their own they both can; sharing one
# (or the host's), the second finds the port taken.
me=$1 other=$2
. /ctx/ports.env
/ctx/probe bind 8080 120 > /tmp/bind &
i=0; until [ -s /tmp/bind ] || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done
touch /sync/twin-$NONCE-$me
i=0; until [ -e /sync/twin-$NONCE-$other ] || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done
if [ -e /sync/twin-$NONCE-$other ]; then echo "$me: the other step ran at the same time"; else echo "$me: the other step never came"; fi
echo "$me: $(cat /tmp/bind)"
kill $! 2>/dev/null; true
