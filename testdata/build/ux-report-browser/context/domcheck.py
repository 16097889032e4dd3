# domcheck.py RECORD.json DOM.html: every step of the record is in the DOM
# Chromium built from the report, in the timeline (an SVG group) and in the
# step table (a row), under its own name; the critical path is marked.
import html.parser, json, sys
record = json.load(open(sys.argv[1]))
class Steps(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.timeline, self.rows, self.critical, self.svg = {}, set(), set(), 0
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg":
            self.svg += 1
        if tag == "g" and "data-step" in a:
            self.timeline[int(a["data-step"])] = a.get("data-name")
        if tag == "tr" and "data-step" in a:
            self.rows.add(int(a["data-step"]))
        if tag == "rect" and "critical" in a.get("class", "").split():
            self.critical.add(len(self.timeline))
p = Steps()
p.feed(open(sys.argv[2], encoding="utf-8").read())
steps = record["steps"]
print("steps in the record:", len(steps))
print("every step in the timeline, by name:", all(p.timeline.get(s["id"]) == s["name"] for s in steps))
print("every step in the table:", all(s["id"] in p.rows for s in steps))
print("nothing else:", set(p.timeline) == {s["id"] for s in steps} == p.rows)
print("critical path marked:", len(p.critical) == len(record["critical_path"]))
print("timeline drawn as SVG:", p.svg >= 1)
