# bytes.py plain|json < STDERR: the byte counts a build printed while a
# blob was downloaded (through the slow proxy: several seconds).
import json, re, sys
kind = sys.argv[1]
lines = sys.stdin.read().splitlines()
if kind == "plain":
    moving = [l for l in lines if re.match(r"^#0 downloading sha256:[0-9a-f]{12} [0-9.]+[kMG]?B / [0-9.]+[kMG]?B [0-9.]+s$", l)]
    done = [l for l in lines if re.match(r"^#0 downloading sha256:[0-9a-f]{12} .* done$", l)]
    print("byte counts while it moved:", len(moving) >= 1, "and when it was done:", len(done) >= 1)
else:
    t = [json.loads(l) for l in lines]
    t = [e for e in t if e["status"] == "transfer" and e["action"] == "download"]
    moving = [e for e in t if e["state"] == "moving" and 0 < e["current"] < e["total"]]
    print("JSON byte counts while it moved:", len(moving) >= 1, "states:", " ".join(sorted({e["state"] for e in t})))
