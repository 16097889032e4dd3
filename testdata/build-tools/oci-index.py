#!/usr/bin/env python3
"""Prints the top-level index.json of an OCI layout (directory or tar): per
entry its media type, platform, annotations, and whether its digest and size
equal the first entry's.

usage: oci-index.py LAYOUT
"""
import json
import os
import sys
import tarfile

path = sys.argv[1]
if os.path.isdir(path):
    with open(os.path.join(path, "index.json")) as f:
        idx = json.load(f)
else:
    with tarfile.open(path) as t:
        idx = json.loads(t.extractfile("index.json").read())
ms = idx["manifests"]
print(f"{len(ms)} entries")
for m in ms:
    p = m.get("platform")
    plat = "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x) if p else "-"
    same = m["digest"] == ms[0]["digest"] and m["size"] == ms[0]["size"]
    print(f"  {m['mediaType']} {plat} same-as-first={str(same).lower()} {json.dumps(m.get('annotations', {}), sort_keys=True)}")
