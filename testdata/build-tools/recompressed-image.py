#!/usr/bin/env python3
"""Writes an OCI image layout holding a one-layer image whose layer is the
tar TAR compressed by Python's gzip (level 1): the same layer (diffID) as
`kiln import TAR` makes, in a different gzip blob, as another registry or
client would have compressed it.

usage: recompressed-image.py TAR LAYOUT-DIR [TAG]
"""
import gzip
import hashlib
import json
import os
import platform
import sys

tar_path, layout = sys.argv[1], sys.argv[2]
tag = sys.argv[3] if len(sys.argv) > 3 else "latest"
with open(tar_path, "rb") as f:
    tar = f.read()
blob = gzip.compress(tar, compresslevel=1, mtime=0)
os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)


def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", d), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}


def canonical(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":")).encode()


config = {
    "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
    "os": "linux",
    "created": "2020-09-13T12:26:40Z",
    "config": {"Cmd": ["sh"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
    "history": [{"created": "2020-09-13T12:26:40Z", "created_by": "recompressed-image.py"}],
}
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": dict(put(canonical(config)), mediaType="application/vnd.oci.image.config.v1+json"),
    "layers": [dict(put(blob), mediaType="application/vnd.oci.image.layer.v1.tar+gzip")],
}
m = put(canonical(manifest))
index = {
    "schemaVersion": 2,
    "manifests": [
        dict(m, mediaType="application/vnd.oci.image.manifest.v1+json",
             annotations={"org.opencontainers.image.ref.name": tag})
    ],
}
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump(index, f)
with open(os.path.join(layout, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
