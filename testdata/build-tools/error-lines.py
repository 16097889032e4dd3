#!/usr/bin/env python3
"""The Dockerfile lines a failed build's error points at, as BuildKit's
errdefs.Sources ranges: in buildx's error box (`Dockerfile:N` then
` N | >>> text`) or kiln's `error: Dockerfile:N:COL:` form. Prints the file
name and the line numbers.

usage: error-lines.py BUILD.LOG
"""
import re
import sys

text = open(sys.argv[1], errors="replace").read()
lines = sorted({int(n) for n in re.findall(r"^\s*(\d+) \| >>>", text, re.M)})
files = re.findall(r"^(Dockerfile[^:\s]*):\d+(?:-\d+)?\s*$", text, re.M)
if not lines:
    m = re.search(r"^error: (Dockerfile[^:\s]*):(\d+)(?::\d+)?:", text, re.M)
    if m:
        files, lines = [m.group(1)], [int(m.group(2))]
print(f"source {files[0] if files else None}, lines {lines}")
