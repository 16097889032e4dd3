#!/usr/bin/env python3
"""Prints each file NAME under DIR as `NAME: 'content'` (Python's repr, so
newlines, tabs and a missing trailing newline show), `NAME -> target` for a
symbolic link, or `NAME: (missing)`.

usage: show-files.py DIR NAME...
"""
import os
import sys

root = sys.argv[1]
for name in sys.argv[2:]:
    p = os.path.join(root, name)
    if os.path.islink(p):
        print(f"{name} -> {os.readlink(p)}")
    elif os.path.isfile(p):
        with open(p, "rb") as f:
            data = f.read()
        try:
            print(f"{name}: {data.decode()!r}")
        except UnicodeDecodeError:
            print(f"{name}: {data!r}")
    elif os.path.isdir(p):
        print(f"{name}: (directory)")
    else:
        print(f"{name}: (missing)")
