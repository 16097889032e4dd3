# rawlines.py < STDERR: every line is BuildKit's SolveStatus as JSON; what
# kinds of objects came, and whether each vertex's inputs are vertices.
import json, sys
kinds, digests, inputs, errors, text = set(), set(), set(), [], []
for line in sys.stdin.read().splitlines():
    try:
        s = json.loads(line)
    except ValueError:
        text.append(line)
        continue
    assert set(s) <= {"vertexes", "statuses", "logs", "warnings"}, s
    kinds |= set(s)
    for v in s.get("vertexes", []):
        digests.add(v["digest"])
        inputs |= set(v.get("inputs", []))
        if v.get("error"):
            errors.append(v["error"])
print("solve-status kinds:", " ".join(sorted(kinds)))
print("inputs are vertices:", inputs <= digests)
print("a vertex failed:", any("exit code: 7" in e for e in errors))
print("text lines after the stream (the error, as buildx prints it):", len(text) > 0 and text[-1].startswith("error:"))
