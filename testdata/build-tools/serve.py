#!/usr/bin/env python3
"""A loopback HTTP file server for build cases (the harness's `serve`).

usage: serve.py DIR LOG

Binds 127.0.0.1 on a free port, prints `127.0.0.1:PORT` on stdout, and
serves the files of DIR (GET and HEAD; 404 for anything else, directories
included). Like BuildKit's test server (util/testutil/httpserver), a
response carries no validators of its own: the headers in a sidecar file
`NAME.headers` next to the file (`Header: value` lines: `ETag`,
`Last-Modified`, `Content-Disposition`, `Content-Encoding`, …) are sent with
it, and a request whose `If-None-Match` equals the sidecar's ETag is
answered 304. Appends `METHOD PATH STATUS` to LOG for each request.
Git repositories under DIR are served as git's dumb HTTP protocol expects
(run `git update-server-info` in them first). A directory's URL serves its
file `__index__`.
"""
import http.server
import os
import sys

ROOT, LOG = sys.argv[1], sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self, status):
        with open(LOG, "a") as f:
            f.write(f"{self.command} {self.path} {status}\n")

    def serve(self, body_wanted):
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = os.path.normpath(os.path.join(ROOT, rel))
        if os.path.isdir(path):
            path = os.path.join(path, "__index__")
        if not path.startswith(os.path.abspath(ROOT)) or not os.path.isfile(path) \
                or path.endswith(".headers"):
            self.record(404)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        headers = []
        if os.path.exists(path + ".headers"):
            with open(path + ".headers") as f:
                headers = [tuple(x.strip() for x in l.split(":", 1)) for l in f if ":" in l]
        etag = dict((k.lower(), v) for k, v in headers).get("etag")
        if etag is not None and self.headers.get("If-None-Match") == etag:
            self.record(304)
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(path, "rb") as f:
            body = f.read()
        self.record(200)
        self.send_response(200)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body_wanted:
            self.wfile.write(body)

    def do_GET(self):
        self.serve(True)

    def do_HEAD(self):
        self.serve(False)


ROOT = os.path.abspath(ROOT)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"127.0.0.1:{server.server_address[1]}", flush=True)
sys.stdout.close()
server.serve_forever()
