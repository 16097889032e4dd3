#!/usr/bin/env python3
"""What BuildKit's SOURCE_DATE_EPOCH tests read from an OCI layout (directory
or tar) of one image: the number of layers and each layer's
"buildkit/rewritten-timestamp" annotation, the image's created time and the
history entries' created times (seconds since 1970), and, with FILE, the
content of FILE in the last layer.

usage: oci-epoch.py LAYOUT [FILE]
"""
import datetime
import gzip
import io
import json
import os
import sys
import tarfile

path = sys.argv[1]
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


def secs(s):
    if not s:
        return None
    s = s.rstrip("Z").split(".")[0]
    return int(datetime.datetime.fromisoformat(s).replace(tzinfo=datetime.timezone.utc).timestamp())


m = json.loads(blob(json.loads(read("index.json"))["manifests"][0]["digest"]))
cfg = json.loads(blob(m["config"]["digest"]))
print(f"layers: {len(m['layers'])}")
for i, l in enumerate(m["layers"]):
    print(f"layer {i} rewritten-timestamp: {(l.get('annotations') or {}).get('buildkit/rewritten-timestamp')!r}")
if m["layers"]:
    print(f"last layer rewritten-timestamp: {(m['layers'][-1].get('annotations') or {}).get('buildkit/rewritten-timestamp')!r}")
print(f"created: {secs(cfg.get('created'))}")
print(f"history created: {sorted({secs(h.get('created')) for h in cfg.get('history', [])}, key=str)}")
if len(sys.argv) > 2:
    data = blob(m["layers"][-1]["digest"])
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as lt:
        f = lt.extractfile(sys.argv[2])
        print(f"{sys.argv[2]} in the last layer: {f.read().decode()!r}")
