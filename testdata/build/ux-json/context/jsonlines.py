# jsonlines.py < STDERR: every line kiln wrote is one JSON object with a
# time and a status; prints what kinds of events came (sorted), the
# transfers' actions and states, and the last line's status.
import json, sys
lines = sys.stdin.read().splitlines()
events = []
for n, line in enumerate(lines, 1):
    try:
        e = json.loads(line)
    except ValueError as err:
        print("line %d is not JSON: %r (%s)" % (n, line[:80], err))
        sys.exit(1)
    assert isinstance(e, dict) and "time" in e and "status" in e, line
    events.append(e)
print("every line is a JSON event:", bool(events))
print("statuses:", " ".join(sorted({e["status"] for e in events})))
t = sorted({(e["action"], e["state"]) for e in events if e["status"] == "transfer"})
if t:
    print("transfers:", " ".join("%s/%s" % x for x in t))
# Registry and output lines by their first word (a blob's digest: <blob>).
msgs = sorted({"<blob>" if w.startswith("sha256:") else w
               for w in (e["message"].split(" ")[0] for e in events if e["status"] == "message")})
if msgs:
    print("messages:", " ".join(msgs))
last = events[-1]
print("last:", last["status"], {k: last[k] for k in ("exit_code", "error", "file", "line", "column") if k in last})
