#!/usr/bin/env python3
"""Prints the history of the image in the OCI layout $OUT/oci (or LAYOUT):
the number of layers, then one line per history entry: whether it is an
empty layer, whether it has a creation time, and its created_by.

usage: oci-history.py [LAYOUT]
"""
import json
import os
import sys

layout = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ["OUT"], "oci")


def blob(digest):
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])) as f:
        return json.load(f)


with open(os.path.join(layout, "index.json")) as f:
    manifest = blob(json.load(f)["manifests"][0]["digest"])
cfg = blob(manifest["config"]["digest"])
print(f"layers: {len(cfg['rootfs']['diff_ids'])}, history entries: {len(cfg.get('history', []))}")
for h in cfg.get("history", []):
    print(f"empty_layer={str(h.get('empty_layer', False)).lower()} created={'yes' if h.get('created') else 'no'} {h.get('created_by', '')}")
