#!/usr/bin/env python3
"""Writes a tar archive from a list of entries, as BuildKit's Go tests build
them with archive/tar (no parent directories unless listed, owner 0:0).

usage: make-tar.py OUT.tar[.gz] ENTRY...
  f:NAME:MODE:CONTENT   regular file (MODE octal; CONTENT may use \\n)
  d:NAME:MODE           directory
  l:NAME:TARGET         symbolic link (mode 0777)
  h:NAME:TARGET         hard link to an earlier entry
  m:SECONDS             the modification time of the entries that follow
                        (default 0)
A name ending in .gz is gzip-compressed.
"""
import io
import sys
import tarfile

out, entries = sys.argv[1], sys.argv[2:]
mtime = 0
with tarfile.open(out, "w:gz" if out.endswith(".gz") else "w", format=tarfile.PAX_FORMAT) as t:
    for e in entries:
        kind, rest = e.split(":", 1)
        if kind == "m":
            mtime = int(rest)
            continue
        i = None
        if kind == "f":
            name, mode, content = rest.split(":", 2)
            data = content.encode().decode("unicode_escape").encode("latin-1")
            i = tarfile.TarInfo(name)
            i.mtime = mtime
            i.mode, i.size = int(mode, 8), len(data)
            t.addfile(i, io.BytesIO(data))
        elif kind == "d":
            name, mode = rest.split(":", 1)
            i = tarfile.TarInfo(name)
            i.mtime = mtime
            i.type, i.mode = tarfile.DIRTYPE, int(mode, 8)
            t.addfile(i)
        elif kind in ("l", "h"):
            name, target = rest.split(":", 1)
            i = tarfile.TarInfo(name)
            i.mtime = mtime
            i.type = tarfile.SYMTYPE if kind == "l" else tarfile.LNKTYPE
            i.linkname, i.mode = target, 0o777 if kind == "l" else 0o644
            t.addfile(i)
        else:
            sys.exit(f"unknown entry {e!r}")
