#!/bin/sh
# hello @VERSION@: prints its configuration, or serves /srv/static with
# busybox httpd when asked to.
set -e
case "$1" in
--check) echo "hello @VERSION@ ok" ;;
--serve) exec httpd -f -p 8080 -h /srv/static ;;
--config) echo "hello @VERSION@ with config $2:"; cat "$2" ;;
*) echo "usage: hello --check | --serve | --config FILE" >&2; exit 2 ;;
esac
