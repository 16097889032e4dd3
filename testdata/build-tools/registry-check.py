#!/usr/bin/env python3
"""Checks on what kiln pushed, read back by skopeo (an independent client).

same-digest INSPECT_JSON OCI_LAYOUT_DIR
    The digest skopeo reports for the pushed image equals the manifest digest
    of kiln's OCI layout export of the same build.
"""
import json
import sys


def same_digest(inspect_path, layout):
    with open(inspect_path) as f:
        pushed = json.load(f)["Digest"]
    with open(f"{layout}/index.json") as f:
        exported = json.load(f)["manifests"][0]["digest"]
    if pushed == exported:
        print("pushed manifest == exported manifest")
    else:
        print(f"pushed {pushed} != exported {exported}")
        sys.exit(1)


def main():
    cmd = sys.argv[1]
    if cmd == "same-digest":
        same_digest(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")


main()
