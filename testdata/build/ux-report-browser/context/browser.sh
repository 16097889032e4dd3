# browser.sh MODE FILE OUT: headless Chromium (Debian's chromium) on
# file://FILE; MODE dom prints the DOM after the page loaded, MODE shot
# writes a 1280x1600 screenshot to OUT.
profile=$(mktemp -d)
flags="--headless --no-sandbox --disable-gpu --disable-background-networking --no-first-run --disable-component-update --disable-sync --user-data-dir=$profile"
case $1 in
dom) chromium $flags --dump-dom "file://$2" 2>/dev/null ;;
shot) chromium $flags --window-size=1280,1600 --screenshot="$3" "file://$2" >/dev/null 2>&1 ;;
esac
status=$?
rm -rf "$profile"
exit $status
