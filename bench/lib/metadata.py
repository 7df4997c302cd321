#!/usr/bin/env python3
"""A stand-in for the GCE metadata server: serves one fixed ID token and counts requests.

Usage: metadata.py PORT TOKEN_FILE. GET /count answers how many identity requests arrived.
Checks what the real server checks: the path and `Metadata-Flavor: Google`.
"""
import http.server
import sys
import threading

IDENTITY = "/computeMetadata/v1/instance/service-accounts/default/identity"
lock = threading.Lock()
count = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/text")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Metadata-Flavor", "Google")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        global count
        path = self.path.split("?", 1)[0]
        if path == "/count":
            with lock:
                return self.answer(200, str(count))
        if path == "/":
            # The probe credential discovery sends before it settles on the metadata server.
            if self.headers.get("Metadata-Flavor") != "Google":
                return self.answer(403, "Missing Metadata-Flavor: Google header")
            return self.answer(200, "computeMetadata/\n")
        if path != IDENTITY:
            return self.answer(404, "not found")
        if self.headers.get("Metadata-Flavor") != "Google":
            return self.answer(403, "Missing Metadata-Flavor: Google header")
        if "audience=" not in self.path:
            return self.answer(400, "audience is required")
        with lock:
            count += 1
        self.answer(200, TOKEN)


if __name__ == "__main__":
    port = int(sys.argv[1])
    with open(sys.argv[2]) as f:
        TOKEN = f.read().strip()
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
