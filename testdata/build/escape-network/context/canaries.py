"""Host-side canaries of the escape-network build case (run as root, in the
case's context directory, by `run` lines of its script).

  canaries.py start STATE  starts a daemon: a loopback-only HTTP service, a
                           process sending it a Basic-auth header every
                           20 ms, an HTTP service on the host's primary
                           address (for outbound reachability), and a
                           watcher that, when a step says so through its
                           cache mount (STATE/cache-mounts/*/data/listening),
                           looks at the host's port 81 and answers
                           (probed); writes ports.env for the Dockerfiles
  canaries.py report       what the host saw since the last report
  canaries.py stop         stops the daemon

Every line printed is the same on any host.
"""

import http.server
import json
import os
import pathlib
import secrets
import signal
import socket
import sys
import threading
import time

HERE = pathlib.Path.cwd()
# The daemon's own files, which it rewrites while builds walk the context:
# in a directory the context's .dockerignore leaves out (a temporary file
# that a build listed and the daemon renamed away failed that build).
OWN = HERE / ".canaries"
OWN.mkdir(exist_ok=True)
STATUS = OWN / "status.json"
SEEN = OWN / "seen.json"
PID = OWN / "pid"
LOG = OWN / "log"
AUTH = b"Authorization: Basic a2lsbjpjYW5hcnk="  # kiln:canary


def primary_address():
    # The source address of the route out (no packet is sent).
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("198.51.100.1", 9))
    addr = s.getsockname()[0]
    s.close()
    return addr


def host_listens(port):
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = pathlib.Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def daemon(state):
    lock = threading.Lock()
    status = {"probe_requests": 0, "sender_requests": 0, "port81": []}

    def save():
        # Callers hold `lock`; the temporary file is the thread's own all
        # the same, so that no two writers ever share one.
        tmp = STATUS.with_suffix(f".tmp{threading.get_ident()}")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, STATUS)

    def handler(body):
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with lock:
                    if self.headers.get("Authorization"):
                        status["sender_requests"] += 1
                    elif body.startswith(b"HOST-LOOPBACK"):
                        status["probe_requests"] += 1
                    save()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        return H

    loop = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler(b"HOST-LOOPBACK-SECRET\n"))
    addr = primary_address()
    outbound = http.server.ThreadingHTTPServer((addr, 0), handler(b"OUTBOUND-OK\n"))
    for srv in (loop, outbound):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    loop_port = loop.server_address[1]

    def sender():
        req = b"GET /sender HTTP/1.0\r\n" + AUTH + b"\r\n\r\n"
        while True:
            try:
                with socket.create_connection(("127.0.0.1", loop_port), timeout=2) as c:
                    c.sendall(req)
                    while c.recv(4096):
                        pass
            except OSError:
                pass
            time.sleep(0.02)

    def watcher():
        root = pathlib.Path(state) / "cache-mounts"
        while True:
            for listening in root.glob("*/data/listening") if root.is_dir() else []:
                probed = listening.with_name("probed")
                if not probed.exists():
                    with lock:
                        status["port81"].append(host_listens(81))
                        save()
                    probed.touch()
            time.sleep(0.02)

    # The sender's requests save the status from the server's threads: the
    # first save holds the lock too (unlocked, two writers raced on one
    # temporary file and the daemon died at start under load).
    with lock:
        save()
    threading.Thread(target=sender, daemon=True).start()
    threading.Thread(target=watcher, daemon=True).start()
    tmp = HERE / "ports.env.tmp"
    tmp.write_text(
        f"LOOP_PORT={loop_port}\nOUT_ADDR={addr}\nOUT_PORT={outbound.server_address[1]}\n"
        f"NONCE={secrets.token_hex(8)}\n"
    )
    os.chmod(tmp, 0o644)
    os.replace(tmp, HERE / "ports.env")
    time.sleep(600)  # never outlives a forgotten stop by long


def start(state):
    for f in (HERE / "ports.env", STATUS, SEEN, LOG):
        f.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        log = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(devnull, 0)
        for fd in (1, 2):
            os.dup2(log, fd)
        try:
            daemon(state)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(0)
    PID.write_text(str(pid))
    deadline = time.time() + 120
    while not (HERE / "ports.env").exists():
        if time.time() > deadline or os.waitpid(pid, os.WNOHANG) != (0, 0):
            sys.exit("the canaries did not start: " + (LOG.read_text() if LOG.exists() else ""))
        time.sleep(0.05)
    print("canaries: started")


def report():
    status = json.loads(STATUS.read_text())
    seen = json.loads(SEEN.read_text()) if SEEN.exists() else {"probe_requests": 0, "sender_requests": 0, "port81": 0}
    steps = status["probe_requests"] - seen["probe_requests"]
    sent = status["sender_requests"] - seen["sender_requests"]
    ports = status["port81"][seen["port81"]:]
    print(f"host: requests to the loopback service from RUN steps: {steps}")
    print(f"host: Basic-auth requests sent on loopback meanwhile: {'yes' if sent > 0 else 'none'}")
    for p in ports:
        print(f"host: port 81 of the host while a step listened on its 81: {'BOUND' if p else 'free'}")
    SEEN.write_text(json.dumps({**status, "port81": len(status["port81"])}))


def stop():
    try:
        os.kill(int(PID.read_text()), signal.SIGTERM)
    except (OSError, ValueError):
        pass
    print("canaries: stopped")


if __name__ == "__main__":
    cmd = sys.argv[1:2]
    if cmd == ["start"] and len(sys.argv) == 3:
        start(sys.argv[2])
    elif cmd == ["report"]:
        report()
    elif cmd == ["stop"]:
        stop()
    else:
        sys.exit(__doc__)
