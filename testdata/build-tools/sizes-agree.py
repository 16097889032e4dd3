#!/usr/bin/env python3
"""Checks that kiln shows one size per image (issue 21): for every image of
the store ($KILN --root $STATE), `kiln images` SIZE, `kiln inspect` Size,
the sum of `kiln history` sizes and `kiln du -v` SIZE agree, and the Images
row of `kiln du` is the images' layers counted once each. Prints one line
per image (no sizes: they depend on the host's busybox) and `sizes agree`,
or what disagrees (exit 1).

usage: sizes-agree.py [--cache-empty]   (also: the Build Cache row is 0B
                                        and, with nothing removed, Unused)
"""
import json
import os
import subprocess
import sys

kiln, state = os.environ["KILN"], os.environ["STATE"]


def run(*args):
    return subprocess.run([kiln, "--root", state, *args], check=True,
                          capture_output=True, text=True).stdout


def human(n):
    """go-units HumanSizeWithPrecision(n, 3), as kiln and docker print sizes."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    v, i = float(n), 0
    while v >= 1000 and i < len(units) - 1:
        v /= 1000
        i += 1
    if v == 0:
        s = "0"
    else:
        digits = 0 if v >= 100 else 1 if v >= 10 else 2
        s = f"{v:.{digits}f}"
        if "." in s:
            s = s.rstrip("0").rstrip(".")
    return s + units[i]


bad = []
rows = [l.split(" ", 2) for l in
        run("images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}} {{.Size}}").splitlines()]
du_v = {}
for line in run("du", "-v").splitlines():
    w = line.split()
    if len(w) == 6 and w[0] not in ("TYPE", "Images", "Build", "Cache", "Unused"):
        du_v[f"{w[0]}:{w[1]}" if w[0] != "<none>" else w[2]] = w[3]
layer_size = {}
for image_id, name, size in rows:
    label = name if name != "<none>:<none>" else "<dangling " + image_id[7:19] + ">"
    obj = json.loads(run("inspect", image_id))[0]
    history = [int(s) for s in run("history", "-H=false", "--format", "{{.Size}}", image_id).split()]
    with open(os.path.join(state, "blobs", "sha256", image_id[7:])) as f:
        config = json.load(f)
    sizes = [int(s) for s, h in zip(reversed(history), config.get("history", []))
             if not h.get("empty_layer")]
    for diff_id, s in zip(obj["RootFS"]["Layers"], sizes):
        layer_size[diff_id] = s
    shown = du_v.get(name if name != "<none>:<none>" else image_id[7:19])
    checks = {
        "inspect": human(obj["Size"]) == size,
        "history": sum(history) == obj["Size"] and len(sizes) == len(obj["RootFS"]["Layers"]),
        "du -v": shown == size,
    }
    wrong = [k for k, ok in checks.items() if not ok]
    if wrong:
        bad.append(f"{label}: images {size}, inspect {obj['Size']}, history {sum(history)}, du -v {shown}")
    print(f"{label}: {'agree' if not wrong else 'DISAGREE on ' + ', '.join(wrong)}")
summary = {l.split()[0]: l.split() for l in run("du").splitlines()[1:]}
unique = human(sum(layer_size.values()))
if summary["Images"][3] != unique:
    bad.append(f"du Images row {summary['Images'][3]}, layers once each {unique}")
if "--cache-empty" in sys.argv and summary["Build"][4] != "0B":
    bad.append(f"du Build Cache row {summary['Build'][4]} with an empty cache")
print(f"{len(rows)} images: " + ("sizes agree" if not bad else "sizes DISAGREE"))
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
