# The cache's log: "paired" when every start is followed by its own end.
log=$(cat "$STATE"/cache-mounts/*/data/log)
echo "$log" | cut -d' ' -f1 | tr '\n' ' '; echo
echo "$log" | awk 'NR%2==1{w=$2} NR%2==0{if ($2!=w) bad=1} END{print (bad ? "interleaved" : "paired")}'
