#!/usr/bin/env python3
"""What BuildKit's build-check tests compare.

usage: lint.py log BUILD.LOG   the warnings a build reported (buildx's summary
                               lines " - Rule: detail (line N)"), sorted by
                               line then text, and how many
       lint.py json RESULT     a `--call check,format=json` result: its build
                               error, then each warning (rule, line, detail,
                               description, URL), sorted by line then detail
"""
import json
import re
import sys

mode, path = sys.argv[1], sys.argv[2]
if mode == "log":
    ws = []
    for line in open(path, errors="replace"):
        m = re.match(r"^ - (\w+: .* \(line (\d+)\))$", line.rstrip("\n"))
        if m:
            ws.append((int(m.group(2)), m.group(1)))
    ws.sort()
    print(f"{len(ws)} warning(s)")
    for _, w in ws:
        print(f"  {w}")
else:
    o = json.load(open(path))
    err = o.get("buildError")
    if err:
        r = (err.get("location") or {}).get("ranges") or [{}]
        print(f"error: {err.get('message')!r} line {r[0].get('start', {}).get('line')}")
    ws = o.get("warnings") or []

    def line(w):
        return ((w.get("location") or {}).get("ranges") or [{}])[0].get("start", {}).get("line", 0)
    ws.sort(key=lambda w: (line(w), w.get("detail", "")))
    print(f"{len(ws)} warning(s)")
    for w in ws:
        print(f"  {w.get('ruleName')} line {line(w)}: {w.get('detail')}")
        print(f"    {w.get('description')} <{w.get('url', '')}>")
