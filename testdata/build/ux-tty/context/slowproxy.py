# slowproxy.py UPSTREAM PORTFILE RATE: a TCP proxy on a free loopback port
# (written to PORTFILE) in front of UPSTREAM (host:port), passing at most
# RATE bytes a second each way: a registry slow enough for a transfer to be
# watched. Runs until killed, or 10 minutes at most (a guard against being
# left behind).
import os, socket, sys, threading, time

upstream_host, upstream_port = sys.argv[1].rsplit(":", 1)
rate = int(sys.argv[3])

def pipe(src, dst, slow):
    try:
        while True:
            data = src.recv(16384 if slow else 65536)
            if not data:
                break
            dst.sendall(data)
            if slow:
                time.sleep(len(data) / rate)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

def serve(client):
    up = socket.create_connection((upstream_host, int(upstream_port)))
    threading.Thread(target=pipe, args=(client, up, True), daemon=True).start()
    threading.Thread(target=pipe, args=(up, client, True), daemon=True).start()

threading.Timer(600, lambda: os._exit(0)).start()
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
tmp = sys.argv[2] + ".tmp"
with open(tmp, "w") as f:
    f.write(str(listener.getsockname()[1]))
os.rename(tmp, sys.argv[2])
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
