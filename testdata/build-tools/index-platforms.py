#!/usr/bin/env python3
"""Reads an image index (JSON) on stdin; prints its media type and, per
manifest, its platform and media type (not digests, which depend on the
bases' busybox build)."""
import json
import sys

idx = json.load(sys.stdin)
print("index", idx.get("mediaType"), "schemaVersion", idx.get("schemaVersion"))
for m in idx.get("manifests", []):
    p = m.get("platform", {})
    plat = "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)
    print(" ", plat, m.get("mediaType"))
