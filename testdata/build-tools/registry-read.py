#!/usr/bin/env python3
"""Reads an image back from a loopback registry (plain HTTP, the registry
API only), as BuildKit's tests do with contentutil.ProviderFromRef and
testutil.ReadImages.

usage: registry-read.py HOST:PORT/REPO:TAG COMMAND [ARGS]
  digest                      the digest of what the tag points to
  media-types                 the media type of that manifest (or index), and
                              of its config (or of each manifest, with platforms)
  file [PLATFORM] LAYER PATH  the content of PATH in layer LAYER (0-based) of
                              the image (the PLATFORM one, os/arch[/variant],
                              of an index)
  config [PLATFORM] [KEY.KEY] the image configuration (or part of it), JSON;
                              a key may hold dots (os.version)
  platforms                   each image of the index: its platform (with
                              the OS version) and its config's os.version
An index that holds one image and its attestation manifests (what a push
with buildx's default provenance makes) is read as that image.
"""
import gzip
import hashlib
import io
import json
import sys
import tarfile
import urllib.request

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])

ref, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
host, rest = ref.split("/", 1)
repo, tag = rest.rsplit(":", 1)


def get(path, accept=None):
    req = urllib.request.Request(f"http://{host}/v2/{repo}/{path}")
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req) as r:
        return r.read()


def manifest(reference):
    body = get(f"manifests/{reference}", ACCEPT)
    return json.loads(body), "sha256:" + hashlib.sha256(body).hexdigest()


def platform_manifest(top, plat):
    if "manifests" not in top:
        return top
    for m in top["manifests"]:
        p = m.get("platform", {})
        name = "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)
        if name == plat:
            return manifest(m["digest"])[0]
    sys.exit(f"no {plat} manifest")


def is_attestation(m):
    """An attestation manifest of an index (buildx's default provenance
    puts one beside each image)."""
    return m.get("annotations", {}).get("vnd.docker.reference.type") == "attestation-manifest"


def only_image(top):
    """The image of a one-platform push: the manifest itself, or the one
    image manifest of an index that holds it and its attestations."""
    if "manifests" not in top:
        return top
    images = [m for m in top["manifests"] if not is_attestation(m)]
    if len(images) != 1:
        sys.exit(f"an index of {len(images)} images: name a platform")
    return manifest(images[0]["digest"])[0]


top, digest = manifest(tag)
if cmd == "digest":
    print(digest)
elif cmd == "media-types":
    print("manifest", top.get("mediaType"))
    if "config" in top:
        print("config", top["config"].get("mediaType"))
    for m in top.get("manifests", []):
        p = m.get("platform", {})
        print(" ", "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x), m.get("mediaType"))
elif cmd == "file":
    plat = args.pop(0) if len(args) == 3 else None
    layer, path = int(args[0]), args[1]
    m = platform_manifest(top, plat) if plat else only_image(top)
    blob = get(f"blobs/{m['layers'][layer]['digest']}")
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        sys.stdout.write(t.extractfile(path).read().decode())
elif cmd == "config":
    plat = args.pop(0) if args and "/" in args[0] else None
    m = platform_manifest(top, plat) if plat else only_image(top)
    value = json.loads(get(f"blobs/{m['config']['digest']}"))
    # Keys are dotted paths; a key may hold dots itself ("os.version").
    keys = args[0].split(".") if args else []
    i = 0
    while i < len(keys):
        if isinstance(value, dict):
            for j in range(len(keys), i, -1):
                if ".".join(keys[i:j]) in value:
                    value, i = value[".".join(keys[i:j])], j
                    break
            else:
                raise KeyError(".".join(keys[i:]))
        else:
            value, i = value[int(keys[i])], i + 1
    print(json.dumps(value, indent=2, sort_keys=True))
elif cmd == "platforms":
    for m in top.get("manifests", [top]):
        if is_attestation(m):
            continue
        p = m.get("platform", {})
        name = p.get("os", "") + (f"({p['os.version']})" if p.get("os.version") else "")
        name = "/".join(x for x in (name, p.get("architecture"), p.get("variant")) if x)
        img = manifest(m["digest"])[0] if "digest" in m else top
        cfg = json.loads(get(f"blobs/{img['config']['digest']}"))
        print(f"{name or '-'}: config os.version {cfg.get('os.version')!r}")
else:
    sys.exit(f"unknown command {cmd}")
