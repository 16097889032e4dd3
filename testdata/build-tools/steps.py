"""Summarises `kiln build --progress=plain` output read from stdin.

Prints each step's outcome (done/cached/error), sorted by step name, as the
test harness's `build` command does; then, with `--blobs`, how many blobs a
push uploaded, mounted, or found already there.
"""
import re
import sys

names, outcome, blobs = {}, {}, {}
for line in sys.stdin:
    line = line.rstrip("\n")
    m = re.match(r"#(\d+) (.*)", line)
    if not m:
        continue
    n, text = m.groups()
    b = re.match(r"sha256:[0-9a-f]{64} (mounted|already exists|.* pushed)$", text)
    if b:
        kind = "pushed" if b.group(1).endswith("pushed") else b.group(1)
        blobs[kind] = blobs.get(kind, 0) + 1
        continue
    if n == "0":
        continue
    if n not in names:
        names[n] = text
    elif text == "CACHED":
        outcome[n] = "cached"
    elif text.startswith("DONE"):
        outcome.setdefault(n, "done")
    elif text.startswith("ERROR"):
        outcome[n] = "error"
for line in sorted(f"  {names[n]}: {outcome.get(n, '?')}" for n in names
                   if names[n] != "exporting to image"):
    print(line)
if "--blobs" in sys.argv:
    for kind in sorted(blobs):
        print(f"  blobs {kind}: {blobs[kind]}")
