# Summarises --progress=json events: every line is JSON with a time; statuses per vertex.
import json, sys
seen = {}
for line in sys.stdin:
    e = json.loads(line)
    assert e["time"].endswith("Z"), e
    st = e["status"]
    if st == "log":
        st = "log(%s)" % e.get("stream", "")
    # Events of no step (transfers, messages, the final result) by status.
    v = seen.setdefault(e.get("name", "(" + e["status"] + ")").split(" sha256:")[0][:40], [])
    if not v or v[-1] != st:
        v.append(st)
for name in sorted(seen):
    print(name, " ".join(seen[name]))
