"""Helpers for tests and benchmarks that start real servers on 127.0.0.1, and the one rule for a
missing component: skip with the reason on a developer's machine, fail under CI (which has it)."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
from collections.abc import Callable

import pytest


def missing(reason: str) -> None:
    """Skip (the reason shown), or fail under CI, whose .ci/run provides everything the tests need."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI provides it, so this must not be skipped)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    """Return once something listens on 127.0.0.1:PORT; raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


Respond = Callable[[str, str, bytes], tuple[int, bytes]]
"""(method, path, request body) -> (status, JSON body)."""


def serve_json(respond: Respond) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A threaded HTTP server on a free 127.0.0.1 port that answers every GET and POST with
    `respond`; returns it (`.shutdown()` stops it) and its OpenAI-style base URL (.../v1)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.answer(*respond("GET", self.path, b""))

        def do_POST(self) -> None:
            self.answer(*respond("POST", self.path, self.rfile.read(int(self.headers.get("Content-Length", 0)))))

        def answer(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"
