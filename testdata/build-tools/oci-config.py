#!/usr/bin/env python3
"""Prints part of the image configuration in the OCI layout $OUT/oci.

usage: oci-config.py [DOTTED.PATH]   e.g. config.Labels, history
(a missing key prints null)
"""
import json
import os
import sys

layout = os.path.join(os.environ["OUT"], "oci")


def blob(digest):
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])) as f:
        return json.load(f)


with open(os.path.join(layout, "index.json")) as f:
    index = json.load(f)
manifest = blob(index["manifests"][0]["digest"])
value = blob(manifest["config"]["digest"])
for key in sys.argv[1].split(".") if len(sys.argv) > 1 else []:
    value = value.get(key) if isinstance(value, dict) else value[int(key)]
print(json.dumps(value, indent=2, sort_keys=True))
