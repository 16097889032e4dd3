# watch.py [options] COMMAND: runs COMMAND in a detached tmux pane of a
# fixed size and reads the pane while it runs (every 0.1 s):
#   --seen NAME=REGEX[&&REGEX…]  whether one screen ever had lines matching
#                                every REGEX at once (printed as NAME: bool);
#   --interrupt REGEX            sends Ctrl-C (a keypress, as a user would)
#                                once a line matches REGEX;
#   --sorted                     prints the last screen's lines sorted
#                                (blobs move in parallel: their lines come
#                                in any order);
# then prints the last screen, with times, sizes, rates and digests masked.
# A limit of 120 s on the whole is a hang guard, not a measurement.
import re, subprocess, sys, time

args = sys.argv[1:]
seen, interrupt, cols, rows, sort = [], None, 100, 30, False
while args and args[0].startswith("--"):
    opt = args.pop(0)
    if opt == "--seen":
        name, pats = args.pop(0).split("=", 1)
        seen.append((name, [re.compile(p) for p in pats.split("&&")], False))
    elif opt == "--interrupt":
        interrupt = re.compile(args.pop(0))
    elif opt == "--sorted":
        sort = True
    elif opt == "--size":
        cols, rows = map(int, args.pop(0).split("x"))
command = args[0]
sock = "/tmp/kiln-ux-tty-%d.sock" % __import__("os").getpid()
tmux = ["tmux", "-S", sock]
subprocess.run(tmux + ["new-session", "-d", "-x", str(cols), "-y", str(rows),
                       "%s; echo \"[exit $?]\"; tmux -S %s wait-for -S done; sleep 60" % (command, sock)], check=True)
waiter = subprocess.Popen(tmux + ["wait-for", "done"])
def screen(joined=True):
    out = subprocess.run(tmux + ["capture-pane", "-p"] + (["-J"] if joined else []) + ["-S", "-"],
                         capture_output=True, text=True).stdout
    return [l.rstrip() for l in out.splitlines()]
def lines():
    # Wrapped lines joined (-J: the plain output's long lines), and the rows
    # as they are on screen: the view truncates its lines to the width, but
    # one that fills the last column may be flagged as wrapped and joined to
    # the next, whatever that one starts with.
    return screen() + screen(joined=False)
sent = False
deadline = time.time() + 120
last = []
while waiter.poll() is None and time.time() < deadline:
    now = lines()
    for i, (name, pats, ok) in enumerate(seen):
        if not ok and all(any(p.search(l) for l in now) for p in pats):
            seen[i] = (name, pats, True)
    if interrupt and not sent and any(interrupt.search(l) for l in now):
        subprocess.run(tmux + ["send-keys", "C-c"])
        sent = True
    time.sleep(0.1)
if waiter.poll() is None:
    waiter.kill()
    print("timed out (hang guard)")
last = screen()
subprocess.run(tmux + ["kill-server"])
try:
    __import__("os").remove(sock)
except OSError:
    pass
for name, _, ok in seen:
    print("%s: %s" % (name, ok))
if interrupt:
    print("Ctrl-C sent:", sent)
mask = [
    (r"127\.0\.0\.1:[0-9]+", "<proxy>"),
    (r"size: [0-9]+", "size: <n>"),
    (r"@?sha256:[0-9a-f]{12,64}", "<digest>"),
    (r"\b[0-9]+(\.[0-9]+)?s\b", "<t>"),
    (r"[0-9]+(\.[0-9]+)? ?[kMG]?B(/s)?\b", "<size>"),
    (r"\b\d+\.\d\b", "<t>"),
]
print("-- screen" + (" (lines sorted)" if sort else ""))
shown = []
for l in last:
    if not l:
        continue
    for a, b in mask:
        l = re.sub(a, b, l)
    shown.append(re.sub(r" {2,}", " ", l))
for l in sorted(shown) if sort else shown:
    print(l)
