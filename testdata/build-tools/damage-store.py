"""Damages a kiln state directory the way a disk or a crash could, for
`kiln check` tests: usage: damage-store.py STATE OCI_LAYOUT (the layout of
the image built last, whose layers are damaged).

- the blob of the image's top layer gets a byte appended (corrupt);
- the snapshot of its second layer loses its meta.json;
- the blob of its third layer is deleted (its layer record points at nothing);
- the cache entry of the image's last step is overwritten with bytes that
  do not decode (that step runs again).
"""
import glob
import json
import os
import sys

state, layout = sys.argv[1], sys.argv[2]


def blob(root, digest):
    return os.path.join(root, "blobs", "sha256", digest.split(":", 1)[1])


index = json.load(open(os.path.join(layout, "index.json")))
manifest = json.load(open(blob(layout, index["manifests"][0]["digest"])))
layers = manifest["layers"]
image_id = manifest["config"]["digest"].split(":", 1)[1]
snapshots = json.load(open(os.path.join(state, "image-layers", image_id)))["layers"]

with open(blob(state, layers[-1]["digest"]), "ab") as f:
    f.write(b"x")
os.remove(blob(state, layers[-2]["digest"]))
others = [
    m
    for m in sorted(glob.glob(os.path.join(state, "snapshots", "*", "meta.json")))
    if os.path.basename(os.path.dirname(m)) not in snapshots
    and "kiln.diff_id" not in json.load(open(m)).get("labels", {})
]
os.remove(others[0])
# The entry of the image's last step: the one whose value is its layers.
entry = next(
    e
    for e in sorted(glob.glob(os.path.join(state, "cache", "??", "*")))
    if json.load(open(e)).get("layers") == snapshots
)
with open(entry, "w") as f:
    f.write("garbage\n")
print("damaged: 1 corrupt blob, 1 missing blob, 1 snapshot without metadata, 1 cache entry")
