#!/usr/bin/env python3
"""Removes blobs from a kiln state directory, to test `kiln check`:

  layer-of:NAME:I     the blobs of layer I (from 0) of the image NAME
  manifest-of:NAME    the manifest blob NAME records

NAME as `kiln images` shows it (busybox:latest, host:port/repo:tag).
usage: remove-blobs.py STATE WHAT...
"""
import json
import os
import sys

state = sys.argv[1]
with open(os.path.join(state, "images", "images.json")) as f:
    names = json.load(f)["images"]


def full(name):
    first = name.split("/")[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return "docker.io/" + (name if "/" in name else "library/" + name)


def blob(digest):
    return os.path.join(state, "blobs", "sha256", digest.split(":", 1)[1])


for what in sys.argv[2:]:
    kind, rest = what.split(":", 1)
    if kind == "layer-of":
        name, i = rest.rsplit(":", 1)
        ref = names[full(name)]
        with open(blob(ref["id"])) as f:
            diff_id = json.load(f)["rootfs"]["diff_ids"][int(i)]
        with open(os.path.join(state, "layerblobs", diff_id.split(":", 1)[1] + ".json")) as f:
            record = json.load(f)
        for b in record["blobs"]:
            os.remove(blob(b["descriptor"]["digest"]))
        print(f"removed {len(record['blobs'])} blob(s) of layer {i} of {name}")
    elif kind == "manifest-of":
        os.remove(blob(names[full(rest)]["manifest"]))
        print(f"removed the manifest of {rest}")
