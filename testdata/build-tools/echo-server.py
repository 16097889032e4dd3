#!/usr/bin/env python3
"""A loopback TCP server that sends MESSAGE to every connection and closes
it (BuildKit's util/testutil/echoserver), for RUN network tests.

usage: echo-server.py MESSAGE PORTFILE
Listens on 127.0.0.1, a free port, which it writes to PORTFILE; forks into
the background (its pid is in PORTFILE.pid) and runs until killed.
"""
import os
import socket
import sys

msg, portfile = sys.argv[1].encode(), sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(16)
if os.fork():
    os._exit(0)
os.setsid()
for fd in (0, 1, 2):
    os.dup2(os.open(os.devnull, os.O_RDWR), fd)
with open(portfile + ".pid", "w") as f:
    f.write(str(os.getpid()))
with open(portfile + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(portfile + ".tmp", portfile)
while True:
    c, _ = s.accept()
    try:
        c.sendall(msg)
    finally:
        c.close()
