#!/usr/bin/env python3
"""Prints what BuildKit's outline and targets tests check of a `--call
outline,format=json` or `--call targets,format=json` result (buildx's JSON
of the frontend.outline / frontend.targets subrequests): the target's name
and description, whether the one source is the Dockerfile, each arg, secret
and ssh entry with its value or required flag, description and line, and
each listed target with its base, default flag, description and line.

usage: outline.py RESULT.json [DOCKERFILE]
"""
import base64
import json
import sys

o = json.load(open(sys.argv[1]))
if "targets" not in o:
    print(f"name: {o.get('name', '')!r} description: {o.get('description', '')!r}")
if len(sys.argv) > 2:
    src = o.get("sources") or []
    same = len(src) == 1 and base64.b64decode(src[0]) == open(sys.argv[2], "rb").read()
    print(f"sources: {len(src)}, the Dockerfile: {str(same).lower()}")


def line(e):
    loc = e.get("location") or {}
    r = loc.get("ranges") or [{}]
    return f"source {loc.get('sourceIndex', 0)} line {r[0].get('start', {}).get('line')}"


for a in o.get("args") or []:
    print(f"arg {a['name']}={a.get('value', '')!r} {a.get('description', '')!r} {line(a)}")
for t in o.get("targets") or []:
    print(f"target {t.get('name', '')!r} base={t.get('base', '')!r} default={str(t.get('default', False)).lower()} {t.get('description', '')!r} {line(t)}")
for kind in ("secrets", "ssh"):
    for s in o.get(kind) or []:
        print(f"{kind} {s['name']} required={str(s.get('required', False)).lower()} {line(s)}")
