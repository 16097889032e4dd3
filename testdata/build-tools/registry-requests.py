#!/usr/bin/env python3
"""Prints the requests a counting proxy forwarded (`proxy-log` FILE, one
`METHOD path` a line) with every digest replaced by what it is in the
images named on the command line (`HOST/REPO@DIGEST`: the manifest, its
config and its layers, read from the registry), then how many layer blobs
were downloaded (GET of a layer's blob)."""
import json
import re
import sys
import urllib.request

ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])

names = {}
layers = set()
for i, ref in enumerate(sys.argv[2:]):
    host, rest = ref.split("/", 1)
    repo, digest = rest.split("@", 1)
    label = repo.rsplit("/", 1)[-1]
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{digest}", headers={"Accept": ACCEPT})
    m = json.load(urllib.request.urlopen(req))
    names[digest] = f"<{label} manifest>"
    names.setdefault(m["config"]["digest"], f"<{label} config>")
    for n, l in enumerate(m["layers"]):
        names.setdefault(l["digest"], f"<{label} layer {n}>")
        layers.add(l["digest"])

downloads = 0
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    method, _, path = line.partition(" ")
    if method == "GET" and "/blobs/sha256:" in path and path.rsplit("/", 1)[-1] in layers:
        downloads += 1
    # Upload session ids are random.
    path = re.sub(r"/blobs/uploads/[0-9a-f-]{36}", "/blobs/uploads/<session>", path)
    path = re.sub(r"_state=[^&]*", "_state=<state>", path)
    path = re.sub(r"sha256(:|%3A)[0-9a-f]{64}", lambda d: names.get("sha256:" + d.group(0)[-64:], "<other digest>"), path)
    print(method, path)
print("layer blobs downloaded:", downloads)
