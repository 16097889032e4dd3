#!/usr/bin/env python3
"""Reads the attestations of an image, as registries and scanners do, and
prints a summary for build-case transcripts (digests shown by what they
are, never by value).

Usage:
  attest-check.py registry HOST/REPO:TAG OUTDIR [SECRET...]
  attest-check.py layout DIR OUTDIR [SECRET...]

The image index is read (from the registry's HTTP API or an OCI layout);
for each attestation manifest (platform unknown/unknown, annotation
vnd.docker.reference.type=attestation-manifest) its statements are read,
checked against the manifest they name, written to OUTDIR (provenance.json,
sbom.spdx.json) and summed up. Every blob the index reaches is searched for
each SECRET (a value that must never appear).
"""
import builtins
import hashlib
import json
import os
import re
import sys
import urllib.request


def print(*args):
    """Prints with the registry's loopback port masked (as in a purl)."""
    line = " ".join(str(a) for a in args)
    builtins.print(re.sub(r"127\.0\.0\.1(%3A|:)(\d+)", lambda m: "$REGISTRY" if m.group(2) not in ("18791", "19491") else m.group(0), line))

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


class Registry:
    def __init__(self, ref):
        host, rest = ref.split("/", 1)
        self.repo, self.tag = rest.rsplit(":", 1)
        self.base = f"http://{host}/v2/{self.repo}"

    def top(self):
        return self.manifest(self.tag)

    def manifest(self, ref):
        accept = ", ".join(
            INDEX_TYPES
            + (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
            )
        )
        req = urllib.request.Request(f"{self.base}/manifests/{ref}", headers={"Accept": accept})
        with urllib.request.urlopen(req) as r:
            body = r.read()
        return body

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


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def main():
    kind, where, out = sys.argv[1:4]
    secrets = [s.encode() for s in sys.argv[4:]]
    os.makedirs(out, exist_ok=True)
    src = Registry(where) if kind == "registry" else Layout(where)
    seen = []
    top = src.top()
    seen.append(top)
    index = json.loads(top)
    print("top:", index.get("mediaType"))
    if index.get("mediaType") not in INDEX_TYPES:
        print("no index: no attestations")
        return
    images = {}
    names = {}
    image_layers = {}
    for i, m in enumerate(index["manifests"]):
        p = m.get("platform", {})
        plat = f'{p.get("os")}/{p.get("architecture")}' + (f'/{p["variant"]}' if p.get("variant") else "")
        if m.get("annotations", {}).get("vnd.docker.reference.type") != "attestation-manifest":
            images[m["digest"]] = plat
            names[m["digest"]] = f"image {plat}"
    for i, m in enumerate(index["manifests"]):
        p = m.get("platform", {})
        plat = f'{p.get("os")}/{p.get("architecture")}'
        ann = dict(m.get("annotations", {}))
        if "vnd.docker.reference.digest" in ann:
            ann["vnd.docker.reference.digest"] = names.get(ann["vnd.docker.reference.digest"], "unknown manifest")
        body = src.manifest(m["digest"])
        seen.append(body)
        assert sha(body) == m["digest"], "manifest digest mismatch"
        print(f"manifest {i}: {m['mediaType']} platform {plat} annotations {json.dumps(ann, sort_keys=True)}")
        if m["digest"] in images:
            image_layers[m["digest"]] = [l["digest"] for l in json.loads(body)["layers"]]
            continue
        man = json.loads(body)
        cfg = src.blob(man["config"]["digest"])
        seen.append(cfg)
        print(f"  config {man['config']['mediaType']} {cfg.decode()}")
        for layer in man["layers"]:
            b = src.blob(layer["digest"])
            seen.append(b)
            assert sha(b) == layer["digest"], "layer digest mismatch"
            st = json.loads(b)
            pt = st["predicateType"]
            print(f"  layer {layer['mediaType']} predicate-type annotation {layer.get('annotations', {}).get('in-toto.io/predicate-type') == pt}")
            subj = [
                (s["name"], names.get("sha256:" + s["digest"]["sha256"], "other"))
                for s in st["subject"]
            ]
            print(f"    {st['_type']} {pt}")
            print(f"    subjects {subj}")
            pred = st["predicate"]
            if "slsa.dev/provenance" in pt:
                json.dump(st, open(os.path.join(out, "provenance.json"), "w"), indent=1, sort_keys=True)
                provenance(pred, pt)
                layers(pred, pt, image_layers.get(m.get("annotations", {}).get("vnd.docker.reference.digest"), []))
            elif "spdx" in pt:
                json.dump(pred, open(os.path.join(out, "sbom.spdx.json"), "w"), indent=1, sort_keys=True)
                spdx(pred)
    for s in secrets:
        leaked = any(s in b for b in seen)
        print(f"secret {s.decode()[:3]}... appears: {'yes' if leaked else 'no'}")


def provenance(p, pt):
    if pt.endswith("v0.2"):
        print(f"    buildType {p['buildType']} builder {p['builder']['id']!r}")
        inv = p["invocation"]
        print(f"    configSource entryPoint {inv['configSource'].get('entryPoint')}")
        params = inv.get("parameters", {})
        print(f"    frontend {params.get('frontend')} args {json.dumps(params.get('args', {}), sort_keys=True)}")
        print(f"    secrets {params.get('secrets')} ssh {params.get('ssh')} locals {params.get('locals')}")
        env = inv.get("environment", {})
        print(f"    environment platform {'platform' in env}")
        for m in p.get("materials", []):
            print(f"    material {m['uri']} {sorted(m.get('digest', {}))}")
        md = p.get("metadata", {})
        for m in md.get("https://kiln.dev/kiln@v1#metadata", {}).get("locals", []):
            print(f"    kiln local {m['uri']} {sorted(m.get('digest', {}))}")
        print(f"    completeness {json.dumps(md.get('completeness'), sort_keys=True)} reproducible {md.get('reproducible')}")
        bc = p.get("buildConfig")
        print(f"    buildConfig steps {len(bc['llbDefinition']) if bc else None}")
        bk = md.get("https://mobyproject.org/buildkit@v1#metadata", {})
        print(f"    buildkit metadata keys {sorted(bk)}")
        src = bk.get("source")
        if src:
            print(f"    source infos {[i['filename'] for i in src.get('infos', [])]} locations {len(src.get('locations', {}))}")
    else:
        bd = p["buildDefinition"]
        print(f"    buildType {bd['buildType']}")
        print(f"    externalParameters {sorted(bd['externalParameters'])}")
        for m in bd.get("resolvedDependencies", []):
            print(f"    dependency {m['uri']} {sorted(m.get('digest', {}))}")
        kiln = p.get("runDetails", {}).get("metadata", {}).get("kiln_metadata", {})
        for m in kiln.get("locals", []):
            print(f"    kiln local {m['uri']} {sorted(m.get('digest', {}))}")


def layers(p, pt, image):
    """BuildKit's layer metadata (mode=max): each step's chains, which
    must be prefixes of the image manifest's layers."""
    md = p.get("metadata", {}).get("https://mobyproject.org/buildkit@v1#metadata") if pt.endswith("v0.2") else p.get("runDetails", {}).get("metadata", {}).get("buildkit_metadata")
    found = (md or {}).get("layers")
    if not found:
        return
    prefixes = sorted(
        len(chain)
        for chains in found.values()
        for chain in chains
        if [d["digest"] for d in chain] == image[: len(chain)]
    )
    total = sum(len(chains) for chains in found.values())
    print(f"    layers: {len(found)} steps, {total} chains, prefixes of the image's {len(image)} layers: {prefixes}")


def spdx(d):
    print(f"    {d['spdxVersion']} {d['dataLicense']} creators {d['creationInfo']['creators']}")
    pkgs = sorted(
        (p["name"], p.get("versionInfo", ""), next((r["referenceLocator"] for r in p.get("externalRefs", []) if r.get("referenceType") == "purl"), ""))
        for p in d.get("packages", [])
    )
    for name, version, purl in pkgs:
        print(f"    package {name} {version} {purl}")


if __name__ == "__main__":
    main()
