#!/usr/bin/env python3
"""Summarises an OCI image layout (a directory, or a tar of one, as
`-o type=oci` writes): each image it holds (through nested indexes), with
its platform, number of layers and the configuration fields asked for.

usage: oci-summary.py LAYOUT [FIELD...]   e.g. Entrypoint Env (config.FIELD)
       fields may also be `history` (created_by lines) or `created`
"""
import json
import os
import sys
import tarfile

path, fields = sys.argv[1], sys.argv[2:]
if os.path.isdir(path):
    def read(name):
        with open(os.path.join(path, name), "rb") as f:
            return f.read()
else:
    t = tarfile.open(path)
    def read(name):
        return t.extractfile(name).read()


def blob(desc):
    return json.loads(read("blobs/sha256/" + desc["digest"].split(":", 1)[1]))


def walk(desc, depth):
    doc = blob(desc)
    p = desc.get("platform")
    plat = "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x) if p else "-"
    if "manifests" in doc:
        print("  " * depth + f"index ({len(doc['manifests'])} manifests)")
        for m in doc["manifests"]:
            walk(m, depth + 1)
        return
    cfg = blob(doc["config"])
    print("  " * depth + f"image {plat}: {len(doc['layers'])} layer(s)")
    for f in fields:
        if f == "history":
            v = [h.get("created_by", "") for h in cfg.get("history", [])]
        elif f == "created":
            v = cfg.get("created")
        else:
            v = (cfg.get("config") or {}).get(f)
        print("  " * depth + f"  {f}: {json.dumps(v)}")


index = json.loads(read("index.json"))
for m in index["manifests"]:
    walk(m, 0)
