"""A loopback file server for ADD-from-URL tests.

Usage: http-server.py DIR PORT LOG

Serves the files of DIR with `Last-Modified` (the file's mtime) and a strong
`ETag` (SHA-256 of the content), answers `If-None-Match` and
`If-Modified-Since` with 304 as real servers do, and appends one line per
request to LOG: `METHOD PATH STATUS [conditional]`.
"""
import email.utils
import hashlib
import http.server
import os
import sys

ROOT, PORT, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def record(self, status):
        cond = " conditional" if ("If-None-Match" in self.headers
                                  or "If-Modified-Since" in self.headers) else ""
        with open(LOG, "a") as f:
            f.write(f"{self.command} {self.path} {status}{cond}\n")

    def do_GET(self):
        path = os.path.join(ROOT, self.path.lstrip("/"))
        if not os.path.isfile(path):
            self.record(404)
            self.send_error(404)
            return
        body = open(path, "rb").read()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        mtime = int(os.stat(path).st_mtime)
        last_modified = email.utils.formatdate(mtime, usegmt=True)
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        not_modified = False
        if inm is not None:
            not_modified = etag in [t.strip() for t in inm.split(",")]
        elif ims is not None:
            t = email.utils.parsedate_to_datetime(ims)
            not_modified = t is not None and mtime <= int(t.timestamp())
        if not_modified:
            self.record(304)
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.record(200)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        self.end_headers()
        self.wfile.write(body)


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
