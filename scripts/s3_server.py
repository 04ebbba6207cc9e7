"""Run moto's S3 server on 127.0.0.1 with a port the OS picks; used by scripts/test.sh.

Usage: s3_server.py PORT_FILE

Binding port 0 here (rather than probing for a free port in the shell and passing it in)
leaves no window in which another process can take the port. Once the server answers an
HTTP request, its port is written to PORT_FILE (atomically, via rename), so a caller that
sees the file can use the server at once. Runs until SIGTERM or SIGINT.

moto checks S3's conditional-write headers (If-None-Match: *, If-Match) and then stores the
object in two separate steps, so two concurrent conditional writes could both pass the check;
real S3 decides them atomically. This server therefore runs conditional PUT/POST requests one
at a time (everything else stays concurrent), so tests of create-if-absent and
compare-and-swap commits see S3's semantics.
"""

import logging
import os
import signal
import sys
import threading
import urllib.request

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


def serialize_conditional_writes(app):
    lock = threading.Lock()

    def wrapped(environ, start_response):
        conditional = "HTTP_IF_MATCH" in environ or "HTTP_IF_NONE_MATCH" in environ
        if conditional and environ["REQUEST_METHOD"] in ("PUT", "POST"):
            with lock:
                # A WSGI app may work while its response is read: finish it under the lock.
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: s3_server.py PORT_FILE", file=sys.stderr)
        return 2
    port_file = sys.argv[1]

    # One line per request is useful when a test fails, but keep it out of the way: the
    # caller sends this process's output to a log file.
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    # What moto's ThreadedMotoServer does, plus the wrapper above.
    app = serialize_conditional_writes(DomainDispatcherApplication(create_backend_app))
    server = make_server(
        "127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler
    )
    host, port = "127.0.0.1", server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()

    # Answering "/" proves the WSGI app is loaded, not just the socket bound.
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=30) as resp:
        resp.read()

    print(f"moto S3 server on http://{host}:{port}", flush=True)
    serve_until_signal(server, port_file)
    return 0


def serve_until_signal(server, port_file):
    """Publish the port of `server` (serving on another thread) in port_file, atomically,
    then wait for SIGTERM or SIGINT and shut it down. Also used by s3_fault_proxy.py."""
    tmp = f"{port_file}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_port}\n")
    os.replace(tmp, port_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
