# Facts of `kiln builds show --format json` that do not depend on timing:
# the steps (sorted), outcomes, why they ran, which ran at the same time,
# the critical path by name, the image's layers and the steps that made
# them.
import json, sys
r = json.load(sys.stdin)
steps = {s["id"]: s for s in r["steps"]}
def name(i):
    return steps[i]["name"].split("@sha256:")[0]
print("status:", r["status"], "exit code:", r["exit_code"])
print("build steps:", sum(1 for s in r["steps"] if not s.get("task")), "cached:", sum(1 for s in r["steps"] if s["outcome"] == "cached"))
for s in sorted(r["steps"], key=lambda s: name(s["id"])):
    line = "  %s: %s" % (name(s["id"]), s["outcome"])
    if s.get("reason"):
        line += " (why: %s)" % s["reason"]
    if s.get("layer_size") is not None:
        line += " [layer %d bytes]" % s["layer_size"]
    print(line)
ran = [s for s in r["steps"] if "start_ms" in s and "end_ms" in s and not s.get("task")]
def find(prefix):
    return next((s for s in ran if s["name"].startswith(prefix)), None)
a, b = find("[slow 2/2]"), find("[quick 3/3]")
if a and b:
    print("the two stages' RUN steps overlapped:", a["start_ms"] < b["end_ms"] and b["start_ms"] < a["end_ms"])
print("at most", r["max_parallel"], "steps at once" if r["max_parallel"] > 1 else "step at once")
print("critical path:", " -> ".join(name(i) for i in r["critical_path"]))
img = r.get("image")
if img:
    print("image layers:", len(img["layers"]))
    for l in img["layers"]:
        print("  ", l["created_by"] or "(base)", "<-", name(l["step"]) if l.get("step") else "base image")
