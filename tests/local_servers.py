"""Helpers for tests and benchmarks that start real servers on 127.0.0.1, and the one rule for a
missing component: skip with the reason on a developer's machine, fail under CI (which has it)."""

from __future__ import annotations

import os
import socket
import time

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
