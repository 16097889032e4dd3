#!/usr/bin/env python3
"""Lists a tar archive (plain or gzip): one line per entry, in archive
order: type, mode, uid:gid, name, and the size and content of short files or
the link target. With NAMES, only those entries.

usage: list-tar.py FILE [NAME...]
"""
import sys
import tarfile

path, names = sys.argv[1], set(sys.argv[2:])
with tarfile.open(path) as t:
    for m in t.getmembers():
        if names and m.name not in names:
            continue
        kind = {tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l", tarfile.LNKTYPE: "h"}.get(m.type, "-" if m.isfile() else "?")
        line = f"{kind} {m.mode & 0o7777:04o} {m.uid}:{m.gid} {m.name}"
        if m.isfile():
            data = t.extractfile(m).read()
            line += f" {len(data)}" + (f" {data.decode(errors='replace')!r}" if len(data) <= 40 else "")
        elif m.issym() or m.islnk():
            line += f" -> {m.linkname}"
        print(line)
