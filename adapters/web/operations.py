"""What the web app does, apart from HTTP: searches (streamed stage by stage), images, thumbnails,
index info and chat threads, all through `ImageTools`, the boundary every adapter shares (roots,
size caps, k/text/concurrency limits, redaction).

Nothing here knows FastAPI: each operation takes plain values and returns JSON-ready data, or raises
`ToolError`/`LensgraphError` with a caller-safe message. Everything a caller sees passes `public`:
strings are redacted and absolute paths shortened (`ImageTools.public_text`), files are named
relative to their root (`ImageTools.public_path`), and the graph's private bits (the reference's
temporary file) are never copied out.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lensgraph.adapters.searcher import Result
from lensgraph.adapters.tools import Busy, ImageTools, NotFound, ToolError
from lensgraph.adapters.web.thumbnails import SAFE_ID, ThumbnailCache, thumbnail_size
from lensgraph.graphs.chat import turn_state
from lensgraph.graphs.runner import stream_query
from lensgraph.pipeline.models.calls import ImageInput
from lensgraph.pipeline.settings import RANKING_STAGES, STAGES, check_stages, check_threshold

THREAD_ID_CHARS = 64
THREAD_ID = re.compile(rf"^[A-Za-z0-9_.-]{{1,{THREAD_ID_CHARS}}}$")
"""A chat thread's id; also the path parameter's pattern in the OpenAPI document (adapters/web/inputs.py)."""
SHOWN_STAGES = ("preview", *RANKING_STAGES)  # the stages after which the page re-draws the grid
"""Stages after which the ranking (or its evidence) changes: each sends the results again."""
TRACE_KEYS = ("stage", "seconds", "calls", "cache_hits", "failures", "rounds", "warnings", "source", "fixes", "skipped",
              "prompt_tokens", "completion_tokens", "cached_tokens")


@dataclass(frozen=True)
class SearchParams:
    text: str = ""
    k: int | None = None
    stages: str | None = None
    threshold: float | None = None
    upload: bytes | None = None
    reference_id: str | None = None
    reference_path: str | None = None


def public(tools: ImageTools, value: Any) -> Any:
    """Model and user text as callers may see it: every string redacted, paths shortened."""
    if isinstance(value, str):
        return tools.public_text(value)
    if isinstance(value, Mapping):
        return {str(k): public(tools, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public(tools, v) for v in value]
    return value


def image_urls(image_id: str, visible: bool) -> dict[str, str | None]:
    if not visible:
        return {"image_url": None, "thumbnail_url": None}
    return {"image_url": f"/api/images/{image_id}", "thumbnail_url": f"/api/images/{image_id}/thumbnail?size=256"}


def public_result(tools: ImageTools, result: Result) -> dict[str, Any]:
    """One result for callers: named relative to its root (null outside the roots, and then no URLs)."""
    name = tools.public_path(result.path)
    return {
        "rank": result.rank, "id": result.id, "name": name, **image_urls(result.id, name is not None),
        "score": result.score, "caption": public(tools, result.caption), "relevance": result.relevance,
        "evidence": public(tools, result.evidence),
    }


def public_trace(tools: ImageTools, trace: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [public(tools, {k: t[k] for k in TRACE_KEYS if k in t}) for t in trace]


def explanation(tools: ImageTools, state: Mapping[str, Any]) -> dict[str, Any]:
    """The request as the models read it (what the report's `query_details` shows)."""
    return public(tools, {
        "instruction": str(state.get("instruction", "")), "caption": str(state.get("caption", "")),
        "reference_id": state.get("reference_id"),
        "edits": [{"type": str(e.get("type", "")), "text": str(e.get("text", ""))} for e in state.get("edits") or []],
        "descriptions": [str(d) for d in state.get("descriptions") or []],
        "questions": [{"question": str(q.get("question", "")), "expected": str(q.get("expected", ""))}
                      for q in state.get("questions") or []],
    })


# -- searching ---------------------------------------------------------------------------------


def check_params(tools: ImageTools, params: SearchParams) -> tuple[str, int]:
    """(text, k), checked as the agent tools check them; text may be empty when a reference is given."""
    given = has_reference(params)
    text = params.text.strip() if params.text else ""
    if text:
        text = tools.check_text(text)
    elif not given:
        raise ToolError("Give a text, a reference image, or both.")
    k = tools.check_k(params.k if params.k is not None else default_k(tools))
    check_threshold(params.threshold)
    check_stages(params.stages)
    return text, k


def has_reference(params: SearchParams) -> bool:
    """Whether a reference is given (an upload, reference_id or reference_path); more than one is
    refused. An empty id or path is none; an upload is one even when empty (and then refused as no image)."""
    given = [x for x in (params.upload, params.reference_id, params.reference_path) if x is not None and x != ""]
    if len(given) > 1:
        raise ToolError("Give one reference: an upload, reference_id or reference_path, not several.")
    return bool(given)


def indexed_file(tools: ImageTools, image_id: str) -> bytes:
    """The bytes of an indexed image, read through the boundary (under a root, size-capped, still
    the indexed content); a 404 otherwise."""
    if not SAFE_ID.fullmatch(image_id or ""):
        raise NotFound("No indexed image has that id.")
    try:
        return tools.image_of(image_id)
    except ToolError as e:
        raise NotFound(f"The image is not available: {e}") from None


def reference_bytes(tools: ImageTools, params: SearchParams) -> bytes | None:
    """The reference's bytes, whichever way it was given, each read once through the boundary."""
    if params.upload is not None:
        return tools.image_bytes(params.upload)
    if params.reference_id:
        return indexed_file(tools, params.reference_id)
    if params.reference_path:
        return tools.read_image(params.reference_path)
    return None


def stages_available(tools: ImageTools) -> tuple[str, ...]:
    """The stages this server's models can run, in order: what /api/index lists, the schema allows
    for `stages`, and a search may ask for."""
    return STAGES[: STAGES.index(tools.context.stages) + 1]


def stages_for(tools: ImageTools, requested: str | None) -> str | None:
    if requested is None:
        return None
    available = stages_available(tools)
    if requested not in available:
        raise ToolError(f"stages={requested!r} needs models this server does not have (it runs up to {available[-1]!r}).")
    return requested


def stage_event(tools: ImageTools, stage: str, update: Mapping[str, Any], state: Mapping[str, Any], k: int) -> dict[str, Any]:
    """What the page needs after one stage: its trace entry, the explanation so far, and (after a
    stage that ranks) the ranking with its evidence."""
    entries = [t for t in update.get("trace", []) if t.get("stage") == stage] or update.get("trace", [])
    data: dict[str, Any] = {"stage": stage, "trace": public_trace(tools, entries), "explanation": explanation(tools, state)}
    if stage in SHOWN_STAGES and "candidates" in update:
        data["results"] = [public_result(tools, r) for r in tools.searcher.results_of(dict(state), k)]
    return {"event": "stage", "data": data}


def final(tools: ImageTools, text: str, state: Mapping[str, Any], results: list[dict[str, Any]], k: int,
          threshold: float | None) -> dict[str, Any]:
    trace = public_trace(tools, state.get("trace", []))
    return {"event": "done", "data": {
        "query": public(tools, text), "k": k, "threshold": threshold, "stages": [t["stage"] for t in trace],
        "explanation": explanation(tools, state), "trace": trace,
        "warnings": [w for t in trace for w in t.get("warnings", [])], "results": results,
    }}


def _similar(tools: ImageTools, reference: bytes, k: int) -> Iterator[dict[str, Any]]:
    """A reference alone: plain image similarity (as `lensgraph search photo.jpg`), no model."""
    started = time.perf_counter()
    hits = tools.searcher.retrieve(ref=reference, k=k)
    results = [public_result(tools, Result(n, h.id, h.path, h.score, h.caption)) for n, h in enumerate(hits, 1)]
    entry = {"stage": "retrieve", "seconds": round(time.perf_counter() - started, 3), "calls": 0, "cache_hits": 0,
             "warnings": [], "source": "reference image"}
    state = {"instruction": "", "caption": "", "reference_id": ImageInput.from_bytes(reference).id, "trace": [entry]}
    yield {"event": "stage", "data": {"stage": "retrieve", "trace": public_trace(tools, [entry]),
                                      "explanation": explanation(tools, state), "results": results}}
    yield final(tools, "", state, results, k, None)


def search_events(tools: ImageTools, params: SearchParams, stages: bool = True) -> Iterator[dict[str, Any]]:
    """One search as events: a "stage" event as each stage of the graph finishes (those after
    retrieve, verify and judge carry the ranking; none with stages=False), then "done" with the
    final ranking (threshold applied). Holds one of the boundary's concurrency slots until it ends
    or is closed."""
    text, k = check_params(tools, params)
    with tools.slot():
        reference = reference_bytes(tools, params)
        if not text:
            yield from _similar(tools, reference, k)  # type: ignore[arg-type]
            return
        searcher = tools.searcher
        ctx = searcher.context_for(k, stages_for(tools, params.stages))
        state: Mapping[str, Any] = {}
        with tools.reference_file(reference) as path:  # a private copy: the caller's path is never reopened
            for stage, update, state in stream_query(ctx, text, path):
                if stages:
                    yield stage_event(tools, stage, update, state, k)
        results = [public_result(tools, r) for r in searcher.results_of(dict(state), k, params.threshold)]
        yield final(tools, text, state, results, k, params.threshold)


def run_search(tools: ImageTools, params: SearchParams) -> dict[str, Any]:
    """A search to its end: the "done" event's data."""
    last: dict[str, Any] = {}
    for event in search_events(tools, params, stages=False):
        last = event
    return last["data"]


# -- images, index, chat -----------------------------------------------------------------------


class Images:
    """Indexed images and their thumbnails for the page. Not on the boundary's concurrency slots
    (a page asks for a screenful at once, and a refusal would be a broken picture): a blocking
    semaphore of its own bounds the decoding work instead."""

    def __init__(self, tools: ImageTools, cache: ThumbnailCache, workers: int = 4, wait: float = 30.0):
        self.tools, self.cache, self.wait = tools, cache, wait
        self._workers = threading.BoundedSemaphore(workers)

    @contextmanager
    def _turn(self) -> Iterator[None]:
        if not self._workers.acquire(timeout=self.wait):
            raise Busy("The server is busy making thumbnails; try again shortly.")
        try:
            yield
        finally:
            self._workers.release()

    def original(self, image_id: str) -> tuple[bytes, str]:
        """(bytes, MIME type) of an indexed image under a root."""
        with self._turn():
            data = indexed_file(self.tools, image_id)
        return data, ImageInput.from_bytes(data).mime

    def thumbnail(self, image_id: str, size: int) -> bytes:
        """A JPEG thumbnail (made once, then read from disk); the image must still be indexed and
        under a root to be shown."""
        size = thumbnail_size(size)
        if not SAFE_ID.fullmatch(image_id or ""):
            raise NotFound("No indexed image has that id.")
        with self._turn():
            cached = self.cache.path(image_id, size)
            if cached.is_file():
                meta = self.tools.searcher.index.metadata([image_id]).get(image_id) or {}
                try:
                    self.tools.allowed_path(meta.get("path") or "")
                except ToolError as e:
                    raise NotFound(f"The image is not available: {e}") from None
                return cached.read_bytes()
            return self.cache.get(image_id, size, lambda: indexed_file(self.tools, image_id)).read_bytes()


def index_info(tools: ImageTools) -> dict[str, Any]:
    info = tools.index_info()
    config = tools.config
    return {
        **public(tools, info), "stages_available": list(stages_available(tools)), "default_k": default_k(tools),
        "max_k": config.max_k, "max_text_chars": config.max_text_chars, "max_image_bytes": config.max_image_bytes,
        "roots": [root.name for root in config.roots], "images_visible": bool(config.roots),
    }


def check_thread(thread_id: str) -> str:
    if not THREAD_ID.fullmatch(thread_id or ""):  # fullmatch: `$` alone also matches before a final newline
        raise ToolError(f"A thread id is 1-{THREAD_ID_CHARS} letters, digits, '.', '_' or '-'.")
    return thread_id


def chat_view(tools: ImageTools, thread_id: str, values: Mapping[str, Any], k: int) -> dict[str, Any]:
    """A thread from its checkpointed state: the turns so far and the last turn's search."""
    state = turn_state(values) if values else {}  # type: ignore[arg-type]
    results = [public_result(tools, r) for r in tools.searcher.results_of(dict(state), k)] if values else []
    turns = [{"message": t.get("message", ""), "description": t.get("description", "")} for t in values.get("history", [])]
    return {"thread_id": thread_id, "description": public(tools, values.get("description", "")),
            "reference_id": tools.reference_id(values.get("reference")),
            "turns": public(tools, turns), "explanation": explanation(tools, state) if values else None,
            "trace": public_trace(tools, state.get("trace", [])), "results": results}


def chat_send(tools: ImageTools, thread_id: str, message: str, k: int | None, reference: SearchParams | None = None) -> dict[str, Any]:
    """One turn of a conversation: the message refines the description, which is searched with the
    same stages as a search. The thread is kept by the server; the same id resumes it. A reference
    (an upload, an indexed id or a path under a root) stays the thread's until another is given."""
    thread_id, message = check_thread(thread_id), tools.check_text(message, "message")
    k = tools.check_k(k if k is not None else default_k(tools))
    given = reference is not None and has_reference(reference)
    with tools.slot():
        kept = tools.kept_reference(reference_bytes(tools, reference)) if given else None  # type: ignore[arg-type]
        tools.searcher.chat(thread_id).send(message, k, ref=kept)
        return chat_thread(tools, thread_id, k)


def chat_thread(tools: ImageTools, thread_id: str, k: int | None = None) -> dict[str, Any]:
    """The thread so far (no turns for a new id)."""
    thread_id = check_thread(thread_id)
    snapshot = tools.searcher.chat_graph.get_state({"configurable": {"thread_id": thread_id}})
    return chat_view(tools, thread_id, snapshot.values or {}, k or default_k(tools))


def default_k(tools: ImageTools) -> int:
    return min(tools.settings.k, tools.config.max_k)
