#!/usr/bin/env python3
"""Prints, for each image of an OCI layout (directory or tar, through
nested indexes), its platform, its config's os/architecture/variant, and
the content of PATH in its layers (the last layer that has it).

usage: oci-files.py LAYOUT PATH
"""
import gzip
import io
import json
import os
import sys
import tarfile

path, want = sys.argv[1], sys.argv[2]
if os.path.isdir(path):
    def read(name):
        with open(os.path.join(path, name), "rb") as f:
            return f.read()
else:
    t = tarfile.open(path)
    def read(name):
        return t.extractfile(name).read()


def blob(digest):
    return read("blobs/sha256/" + digest.split(":", 1)[1])


def walk(desc):
    doc = json.loads(blob(desc["digest"]))
    if "manifests" in doc:
        for m in doc["manifests"]:
            walk(m)
        return
    cfg = json.loads(blob(doc["config"]["digest"]))
    content = None
    for layer in doc["layers"]:
        data = blob(layer["digest"])
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as lt:
            for m in lt.getmembers():
                if m.name.lstrip("./") == want and m.isfile():
                    content = lt.extractfile(m).read().decode(errors="replace")
    p = desc.get("platform") or {}
    plat = "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)
    conf = "/".join(x for x in (cfg.get("os"), cfg.get("architecture"), cfg.get("variant")) if x)
    print(f"{plat}: config {conf}, {want}: {content!r}")


for m in json.loads(read("index.json"))["manifests"]:
    walk(m)
