"""Building a runnable pipeline from Settings, and running queries through the graph."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lensgraph.graphs.context import Context
from lensgraph.graphs.graph import graph
from lensgraph.graphs.nodes import BLANK_ID, StageTimer
from lensgraph.graphs.state import SearchInput, SearchState
from lensgraph.pipeline import __version__
from lensgraph.pipeline.models.backends import build_models
from lensgraph.pipeline.models.backends.openai_compat import redact_url
from lensgraph.pipeline.reasoning.evidence import CaptionMatcher
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.models.calls import CallCache, ImageInput
from lensgraph.pipeline.models.prompts import load_prompt_set
from lensgraph.pipeline.reasoning.replies import BLANK_CAPTION, baseline_query
from lensgraph.pipeline.gallery import Gallery
from lensgraph.pipeline.settings import Settings


def caption_lookup(gallery: Gallery):
    """Stored captions by image id, for caption mode (the blank reference has its stand-in)."""

    def lookup(ids: Sequence[str]) -> dict[str, str]:
        found = {i: m.get("caption", "") for i, m in gallery.index.metadata([i for i in ids if i != BLANK_ID]).items()}
        return {**found, BLANK_ID: BLANK_CAPTION} if BLANK_ID in ids else found

    return lookup


def open_context(settings: Settings, gallery: Gallery | None = None) -> Context:
    """Everything a query needs, built and checked before the first query runs."""
    prompts = load_prompt_set(settings.prompts)  # a broken prompt set fails here, not mid-run
    gallery = gallery or Gallery.open(settings)
    cache = None if settings.no_cache else CallCache(settings.cache_path)
    models = build_models(settings, prompts, caption_lookup(gallery), cache)
    # the index's own caption-channel encoder, loaded only when a caption is first matched
    matcher = CaptionMatcher(embed=lambda texts: gallery.text_encoder.encode_texts(texts))
    return Context(gallery, models, prompts, settings, matcher=matcher)


def query_input(instruction: str, reference: str | None = None, subset: Sequence[str] = ()) -> SearchInput:
    inputs: SearchInput = {"instruction": instruction, "reference": reference}
    if subset:
        inputs["subset"] = list(subset)
    return inputs


def run_query(ctx: Context, instruction: str, reference: str | None = None, subset: Sequence[str] = ()) -> SearchState:
    """One query through the graph; `subset`: index ids whose order over the whole gallery is wanted."""
    return graph.invoke(query_input(instruction, reference, subset), context=ctx)


def preview(ctx: Context, instruction: str, reference: str | None = None) -> dict[str, Any] | None:
    """The plain retrieval of the raw request (the reference's stored caption + the instruction, or
    the reference image + the instruction), ready in a fraction of a second: shown while the plan is
    being made, so the first results never wait for a model. None when it cannot be had quickly
    (the reference unreadable: the graph will say why)."""
    timer = StageTimer("preview")
    try:
        ref_id, caption = None, ""
        if reference:
            ref_id = ImageInput.from_path(reference).id
            caption = (ctx.gallery.index.metadata([ref_id]).get(ref_id) or {}).get("caption") or ""
        if reference and not caption:
            hits = ctx.gallery.retrieve(text=instruction, ref=reference, k=ctx.settings.k, tau=ctx.settings.tau)
        else:
            hits = ctx.gallery.search_texts([baseline_query(caption, instruction)], k=ctx.settings.k, tau=ctx.settings.tau,
                                            exclude={ref_id} if ref_id else set())
    except (OSError, LensgraphError):
        return None
    candidates = [{"id": h.id, "path": h.path, "score": round(h.score, 6), "retrieval": round(h.score, 6)} for h in hits]
    return {"candidates": candidates, "rankings": {"preview": [h.id for h in hits]}, "trace": timer.entry(source="the raw request")}


def stream_query(
    ctx: Context, instruction: str, reference: str | None = None
) -> Iterator[tuple[str, dict[str, Any], SearchState]]:
    """(stage name, its update, the state after it) as each stage finishes: LangGraph's "updates"
    and "values" streams together (a step's values follow its updates). When a model will plan the
    search, a "preview" comes first: the plain retrieval of the raw request."""
    if ctx.runs("reason"):
        shown = preview(ctx, instruction, reference)
        if shown is not None:
            yield "preview", shown, {"instruction": instruction, "reference": reference, **shown}  # type: ignore[misc]
    pending: list[tuple[str, dict[str, Any]]] = []
    for mode, chunk in graph.stream(query_input(instruction, reference), context=ctx, stream_mode=["updates", "values"]):
        if mode == "updates":
            pending += [(stage, update or {}) for stage, update in chunk.items()]
        else:
            for stage, update in pending:
                yield stage, update, chunk  # type: ignore[misc]
            pending = []


def public_settings(settings: Settings) -> dict[str, Any]:
    """Settings as data, without secrets: no API key, no credentials inside URLs."""
    data = settings.model_dump(mode="json", exclude={"openai_api_key"})
    for key in ("llm_base_url", "vlm_base_url", "openai_base_url", "chroma_url"):
        if data.get(key):
            data[key] = redact_url(data[key])
    return data


@dataclass
class Manifest:
    """What produced a result: enough to reproduce and compare it."""

    data: dict[str, Any]

    @staticmethod
    def common(settings: Settings, ctx: Context) -> dict[str, Any]:
        """What any run records about itself: version, settings, index, models, prompts."""
        models = ctx.models
        return {
            "lensgraph": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": public_settings(settings),
            "index": {"name": ctx.gallery.index.name, "clip": ctx.gallery.index.clip_spec,
                      "text_encoder": ctx.gallery.index.text_encoder_spec},
            "models": {
                role: ({"spec": m.spec, "backend": m.identity} if m else None)
                for role, m in (("llm", models.llm), ("captioner", models.captioner),
                                ("verifier", models.verifier), ("judge", models.judge))
            },
            "prompts": {"set": ctx.prompts.name,
                        "files": {s: {"path": p.source, "sha256": p.sha256} for s, p in ctx.prompts.prompts.items()}},
        }

    @classmethod
    def build(cls, settings: Settings, ctx: Context, state: SearchState, started: float) -> Manifest:
        return cls({
            **cls.common(settings, ctx),
            "seconds": round(time.perf_counter() - started, 3),
            "query": {"instruction": state.get("instruction"), "reference": state.get("reference")},
            "rankings": state.get("rankings", {}),
            "stages": state.get("trace", []),
            "calls": sum(t["calls"] for t in state.get("trace", [])),
            "cache_hits": sum(t["cache_hits"] for t in state.get("trace", [])),
        })
