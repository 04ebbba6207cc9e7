"""An HTTP proxy between the tool and an S3 server that injects S3's faults; used by
scripts/torture.sh.

Usage: s3_fault_proxy.py PORT_FILE UPSTREAM [--seed N] [--slowdown P] [--reset P]
                         [--lost-ack P] [--latency-ms MS]

Listens on a free 127.0.0.1 port, written to PORT_FILE (atomically) once it serves, and
forwards every request to UPSTREAM (e.g. http://127.0.0.1:PORT of moto), Host header and all,
so the client's signatures stay valid for moto. Per request, one draw from a sequence
seeded by --seed picks at most one fault:
  --slowdown P    answer 503 SlowDown without forwarding (S3's "reduce your request rate")
  --reset P       a request with a body (an upload): read half of it, then reset the
                  connection (RST), not forwarded
  --lost-ack P    a write (PUT, POST, DELETE): forward it, the upstream does it, then answer
                  500 InternalError: the client cannot tell its write succeeded
and every request waits a random 0..MS milliseconds (--latency-ms) before it is forwarded.
Prints one line per injected fault to stdout. Runs until SIGTERM or SIGINT.
"""

import argparse
import http.client
import os
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from s3_server import serve_until_signal  # noqa: E402

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


def s3_error(code, message):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>fault-proxy</RequestId></Error>"
    ).encode()


class Faults:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()

    def draw(self, method, has_body):
        """(fault or None, latency in seconds) for one request."""
        a = self.args
        with self.lock:
            roll = self.rng.random()
            latency = self.rng.random() * a.latency_ms / 1000.0
        if roll < a.slowdown:
            return "slowdown", latency
        roll -= a.slowdown
        if has_body and roll < a.reset:
            return "reset", latency
        roll -= a.reset
        if method in ("PUT", "POST", "DELETE") and roll < a.lost_ack:
            return "lost-ack", latency
        return None, latency


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    faults = None
    upstream = None

    def log_message(self, fmt, *args):
        pass

    def _read_body(self, limit=None):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n if limit is None else min(n, limit))

    def _reply(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        fault, latency = self.faults.draw(self.command, length > 0 or chunked)
        time.sleep(latency)
        if fault == "reset":
            self._read_body(limit=length // 2)
            print(f"reset {self.command} {self.path} after {length // 2} of {length} bytes", flush=True)
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.close()
            self.close_connection = True
            return
        body = self._read_body()
        if fault == "slowdown":
            print(f"slowdown {self.command} {self.path}", flush=True)
            self._reply(
                503,
                s3_error("SlowDown", "Please reduce your request rate."),
                [("Content-Type", "application/xml")],
            )
            return
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if chunked:
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body if body else None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if fault == "lost-ack":
            print(f"lost-ack {self.command} {self.path} (upstream said {resp.status})", flush=True)
            self._reply(
                500,
                s3_error("InternalError", "We encountered an internal error. Please try again."),
                [("Content-Type", "application/xml")],
            )
            return
        passed = [
            (k, v)
            for k, v in resp.getheaders()
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
        ]
        if self.command == "HEAD":
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            self.end_headers()
            return
        self._reply(resp.status, data, passed)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port_file")
    ap.add_argument("upstream")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slowdown", type=float, default=0.0)
    ap.add_argument("--reset", type=float, default=0.0)
    ap.add_argument("--lost-ack", type=float, default=0.0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    args = ap.parse_args()

    Handler.faults = Faults(args)
    Handler.upstream = urllib.parse.urlsplit(args.upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()

    serve_until_signal(server, args.port_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
