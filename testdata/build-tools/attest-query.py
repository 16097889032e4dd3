#!/usr/bin/env python3
"""Prints what a BuildKit test compares about an image's attestations: each
EXPR (a Python expression) and its value as JSON, one a line.

Usage:
  attest-query.py SOURCE [-p PLATFORM] EXPR...

SOURCE is `registry:HOST/REPO:TAG`, `layout:DIR` (an OCI layout directory)
or `file:PATH` (an in-toto statement, as the local exporter writes it).
PLATFORM (default linux/amd64) picks the image and its attestation
manifest, as testutil.ReadImages' Find and FindAttestation do.

Names an EXPR can use:
  n_images   how many manifests the index lists (ReadImages' len(Images))
  img        the image entry: {"platform", "digest", "annotations"}
  files(i)   the files of the image's layer i: {path: bytes}
  att        the attestation manifest's descriptor annotations, with
             vnd.docker.reference.digest replaced by "image" when it names
             the image's digest
  sts        the statements of the attestation manifest (every layer)
  st, p      the first provenance statement and its predicate
  P("a.b")   a field of p by a dotted path (None when missing)
  bk         BuildKit's metadata of p (v1 runDetails.metadata.buildkit_metadata,
             v0.2 metadata["https://mobyproject.org/buildkit@v1#metadata"])
  v1         whether p is SLSA v1
  b64(s)     base64-decoded bytes; age(t) seconds since an RFC 3339 time;
  env        the environment (values a script set with `let`)
  find(o, k) the first value of key k anywhere in o (depth first)
An EXPR `@FILE` stands for the expressions in FILE, one a line (`#` lines
and blank lines skipped).
Registry hosts on loopback print as $REGISTRY (as attest-check.py).
"""
import base64
import datetime
import gzip
import io
import json
import os
import re
import sys
import tarfile
import urllib.error
import urllib.request

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
ACCEPT = ", ".join(
    INDEX_TYPES
    + (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


class Registry:
    def __init__(self, ref):
        host, rest = ref.split("/", 1)
        self.repo, self.tag = rest.rsplit(":", 1)
        self.base = f"http://{host}/v2/{self.repo}"

    def top(self):
        return self.manifest(self.tag)

    def manifest(self, ref):
        req = urllib.request.Request(f"{self.base}/manifests/{ref}", headers={"Accept": ACCEPT})
        with urllib.request.urlopen(req) as r:
            return r.read()

    def blob(self, digest):
        with urllib.request.urlopen(f"{self.base}/blobs/{digest}") as r:
            return r.read()


class Layout:
    def __init__(self, d):
        self.dir = d

    def top(self):
        idx = json.load(open(os.path.join(self.dir, "index.json")))
        return self.blob(idx["manifests"][0]["digest"])

    def manifest(self, digest):
        return self.blob(digest)

    def blob(self, digest):
        alg, hexd = digest.split(":", 1)
        return open(os.path.join(self.dir, "blobs", alg, hexd), "rb").read()


def platform_of(desc):
    p = desc.get("platform") or {}
    s = f'{p.get("os")}/{p.get("architecture")}'
    return s + (f'/{p["variant"]}' if p.get("variant") else "")


def layer_files(blob):
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    out = {}
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        for m in t.getmembers():
            if m.isfile():
                out[m.name.lstrip("./")] = t.extractfile(m).read()
    return out


def mask(line):
    return re.sub(
        r"127\.0\.0\.1(%3A|:)(\d+)",
        lambda m: "$REGISTRY" if m.group(2) not in ("18791", "19491") else m.group(0),
        line,
    )


def load(source, platform):
    kind, where = source.split(":", 1)
    ns = {"n_images": None, "img": None, "att": None, "sts": [], "files": None}
    if kind == "file":
        ns["sts"] = [json.load(open(where))]
        return ns
    src = Registry(where) if kind == "registry" else Layout(where)
    top = json.loads(src.top())
    if top.get("mediaType") not in INDEX_TYPES:
        ns["n_images"] = 1
        ns["img"] = {"platform": None, "digest": None, "annotations": {}}
        ns["files"] = lambda i: layer_files(src.blob(top["layers"][i]["digest"]))
        return ns
    ms = top["manifests"]
    ns["n_images"] = len(ms)
    is_att = lambda m: (m.get("annotations") or {}).get("vnd.docker.reference.type") == "attestation-manifest"
    image = next((m for m in ms if not is_att(m) and platform_of(m) == platform), None)
    if image is not None:
        ns["img"] = {"platform": platform_of(image), "digest": image["digest"], "annotations": image.get("annotations") or {}}
        man = json.loads(src.manifest(image["digest"]))
        ns["files"] = lambda i: layer_files(src.blob(man["layers"][i]["digest"]))
        att = next(
            (m for m in ms if is_att(m) and m["annotations"].get("vnd.docker.reference.digest") == image["digest"]),
            None,
        )
        if att is not None:
            ann = dict(att["annotations"])
            ann["vnd.docker.reference.digest"] = "image"
            ns["att"] = ann
            aman = json.loads(src.manifest(att["digest"]))
            ns["sts"] = [json.loads(src.blob(l["digest"])) for l in aman["layers"]]
    return ns


def main():
    args = sys.argv[1:]
    source = args.pop(0)
    platform = "linux/amd64"
    if args[:1] == ["-p"]:
        platform = args[1]
        args = args[2:]
    try:
        ns = load(source, platform)
    except urllib.error.HTTPError as e:
        print(mask(f"{source}: HTTP {e.code}"))
        sys.exit(1)
    except OSError as e:
        print(mask(f"{source}: {type(e).__name__}"))
        sys.exit(1)
    st = next((s for s in ns["sts"] if "slsa.dev/provenance" in s.get("predicateType", "")), None)
    p = st["predicate"] if st else None
    v1 = bool(st) and st["predicateType"].endswith("/v1")
    bk = None
    if p is not None:
        bk = (
            (p.get("runDetails", {}).get("metadata") or {}).get("buildkit_metadata")
            if v1
            else (p.get("metadata") or {}).get("https://mobyproject.org/buildkit@v1#metadata")
        )

    def P(path, root=None):
        v = p if root is None else root
        for k in path.split("."):
            if isinstance(v, dict):
                v = v.get(k)
            elif isinstance(v, list) and k.isdigit() and int(k) < len(v):
                v = v[int(k)]
            else:
                return None
        return v

    def age(t):
        t = re.sub(r"(\.\d{6})\d+", r"\1", t).replace("Z", "+00:00")
        return (datetime.datetime.now(datetime.timezone.utc) - datetime.datetime.fromisoformat(t)).total_seconds()

    def find(o, k):
        if isinstance(o, dict):
            if k in o:
                return o[k]
            o = list(o.values())
        if isinstance(o, list):
            for x in o:
                v = find(x, k)
                if v is not None:
                    return v
        return None

    ns.update({"find": find, "st": st, "p": p, "P": P, "bk": bk, "v1": v1, "json": json, "re": re,
               "b64": base64.b64decode, "age": age, "env": os.environ})
    exprs = []
    for a in args:
        if a.startswith("@"):
            exprs += [l.rstrip("\n") for l in open(a[1:]) if l.strip() and not l.startswith("#")]
        else:
            exprs.append(a)
    for expr in exprs:
        try:
            v = eval(expr, ns)
            if isinstance(v, bytes):
                v = v.decode(errors="replace")
            out = json.dumps(v, sort_keys=True)
        except Exception as e:  # noqa: BLE001 - the transcript says what failed
            out = f"error {type(e).__name__}"
        print(mask(f"{expr}: {out}"))


if __name__ == "__main__":
    main()
