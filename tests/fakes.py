"""A scripted model backend for unit tests of the graph's logic (never what makes a feature done)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from pipeline.models import ModelError, Reply, Request


class ScriptedBackend:
    """Answers each request with `script(request)`; records every request it sees."""

    kind = "scripted"
    cacheable = True

    def __init__(self, script: Callable[[Request], str | Exception], name: str = "scripted", max_concurrency: int = 4):
        self.script = script
        self.model_id = name
        self.identity = f"scripted|{name}"
        self.max_concurrency = max_concurrency
        self.history: list[Request] = []
        self._lock = threading.Lock()

    def generate(self, request: Request) -> Reply:
        with self._lock:
            self.history.append(request)
        out = self.script(request)
        if isinstance(out, Exception):
            raise out
        return Reply(out)


def stage_of(prompt: str) -> str:
    """Which stage a prompt of the default or imagescope set belongs to."""
    if "atomic edits" in prompt or prompt.startswith("Plan a photo search"):
        return "reason"
    if "Turn each edit into one yes/no question" in prompt:
        return "propose"
    if "CANDIDATE" in prompt:
        return "judge"
    if "candidate photos, numbered" in prompt:
        return "judge_list"
    if "one word, Yes or No" in prompt:
        return "verify"
    if "Describe this image" in prompt:
        return "caption"
    raise ModelError(f"unexpected prompt: {prompt[:60]!r}")
