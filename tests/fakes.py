"""A scripted model backend for unit tests of the graph's logic (never what makes a feature done)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from typing import Any

from lensgraph.graphs.context import Context
from lensgraph.pipeline.models.calls import ModelError, Reply, Request
from lensgraph.pipeline.settings import Settings


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


def stage_of(request: Request) -> str:
    """The stage asking, as the request says (the listwise judge's is "judge_list")."""
    if not request.stage:
        raise ModelError(f"a request without its stage: {request.prompt[:60]!r}")
    return request.stage


def context(gallery: Any, models: Any, prompts: Any, *, depth: int = 0, keep_reference: bool = False, matcher: Any = None,
            plan_checks: tuple[str, ...] = (), **settings: Any) -> Context:
    """A graph Context for unit tests: these settings over the defaults, and no plan check unless named."""
    settings["plan_checks"] = ",".join(plan_checks) or "none"
    return Context(gallery, models, prompts, Settings(**settings), depth=depth, keep_reference=keep_reference, matcher=matcher)
