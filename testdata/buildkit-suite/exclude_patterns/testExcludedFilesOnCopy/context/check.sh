# check.sh DIR: what the Go test checks of each file of cases.txt: excluded
# (missing), a link's target, or the content; then that builder6/6 is empty
for f in $(cat cases.txt); do
    p=$1/$f
    if [ -L $p ]; then echo "$f: $(readlink $p)"
    elif [ -e $p ]; then echo "$f: $(cat $p)"
    else echo "$f: excluded"; fi
done
echo "builder6/6 entries: $(ls -A $1/builder6/6 | wc -l)"
