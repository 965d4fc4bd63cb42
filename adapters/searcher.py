"""The library's front door: a gallery (pipeline/gallery.py) with the reasoning graph on top.

    searcher = Searcher.open(index="photos", llm="openai:gpt-4o-mini", vlm="openai:gpt-4o-mini")
    results = searcher.search("the same but at night", ref="street.jpg", k=10)
    for r in results:
        print(r.rank, r.score, r.path)
    thread = searcher.chat("my-thread")
    thread.send("a dog on a beach"); thread.send("at sunset")

`search` runs the graph (as many stages as the models allow, or `stages=`); `retrieve` (from
`Gallery`) is plain CLIP/caption retrieval with no models. Every method has an async twin
(`asearch`, `aretrieve`, ...).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lensgraph.graphs.chat import build_chat_graph, send, sqlite_checkpointer, turn_state
from lensgraph.graphs.context import Context
from lensgraph.graphs.runner import open_context, run_query
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.reasoning.evidence import result_evidence
from lensgraph.pipeline.gallery import Gallery
from lensgraph.pipeline.ingest.indexing import IndexReport
from lensgraph.pipeline.store.retrieval import Hit
from lensgraph.pipeline.settings import STAGES, check_stages, check_threshold


@dataclass(frozen=True)
class Result:
    rank: int
    id: str
    path: str | None
    score: float
    caption: str | None = None
    evidence: dict[str, Any] | None = None
    """Verification and judge evidence (pipeline/reasoning/evidence.py: result_evidence); None when unverified."""

    @property
    def relevance(self) -> float | None:
        """Mean probability of the expected answers (and of the judge's Yes); None when unverified."""
        return None if self.evidence is None else self.evidence.get("relevance")


@dataclass
class Results:
    """A search's ranking, with the per-stage explanation (the graph's final state)."""

    results: list[Result]
    explanation: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Result]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> Result:
        return self.results[i]

    @property
    def paths(self) -> list[str | None]:
        return [r.path for r in self.results]

    @property
    def stages(self) -> list[dict[str, Any]]:
        """Per stage: seconds, model calls, cache hits, warnings."""
        return list(self.explanation.get("trace", []))


class ChatThread:
    """One conversation: each `send` refines the target description and searches it with the
    same stages as `Searcher.search` (the evidence included)."""

    def __init__(self, searcher: Searcher, thread_id: str):
        self.searcher = searcher
        self.thread_id = thread_id

    def send(self, text: str, k: int | None = None, ref: str | os.PathLike | None = None,
             threshold: float | None = None) -> Results:
        """The next message (and, optionally, a reference image the thread keeps from now on)."""
        state = send(self.searcher.chat_graph, self.searcher.context_for(k), self.thread_id, text,
                     str(ref) if ref is not None else None)
        return self.searcher.results_of(turn_state(state), k, threshold)

    def history(self) -> list[dict[str, Any]]:
        """The thread so far: per turn, the message, the refined description and the ranked ids."""
        snapshot = self.searcher.chat_graph.get_state({"configurable": {"thread_id": self.thread_id}})
        return list((snapshot.values or {}).get("history", []))

    async def asend(self, text: str, k: int | None = None, ref: str | os.PathLike | None = None,
                    threshold: float | None = None) -> Results:
        return await asyncio.to_thread(self.send, text, k, ref, threshold)


class Searcher(Gallery):
    """A gallery with the reasoning graph: `search`, `chat` and their async twins."""

    # -- the reasoning graph ---------------------------------------------------------------------

    @functools.cached_property
    def context(self) -> Context:
        """The graph's runtime context (models, prompts, cache), built on first use."""
        return open_context(self.settings, self)

    @functools.cached_property
    def chat_graph(self) -> Any:
        return build_chat_graph(sqlite_checkpointer(self.settings.db.parent / "chats.sqlite"))

    def context_for(self, k: int | None, stages: str | None = None) -> Context:
        """The shared context, or a copy with another k / stages (the shared one is never mutated)."""
        ctx = self.context
        changes: dict[str, Any] = {}
        if k is not None and k != ctx.settings.k:
            changes["k"] = k
        if stages is not None and stages != ctx.stages:
            changes["stages"] = stages
        return ctx.configured(**changes)

    def results_of(self, state: dict[str, Any], k: int | None = None, threshold: float | None = None) -> Results:
        """The graph's final candidates as ranked Results (with captions and evidence), plus the state
        as explanation. With a threshold, results whose relevance is below it (or unknown) are dropped."""
        candidates = state.get("candidates", [])[: k or None]
        meta = self.index.metadata([c["id"] for c in candidates])
        results = []
        for c in candidates:
            evidence = result_evidence(state, c["id"])
            relevance = None if evidence is None else evidence["relevance"]
            if threshold is not None and (relevance is None or relevance < threshold):
                continue
            results.append(Result(len(results) + 1, c["id"], c.get("path"), c["score"],
                                  meta.get(c["id"], {}).get("caption"), evidence))
        return Results(results, dict(state))

    def search(self, text: str, ref: str | os.PathLike | None = None, k: int | None = None,
               stages: str | None = None, threshold: float | None = None) -> Results:
        """Run the graph: text-to-image, or composed with a reference image. `stages` picks a
        prefix (retrieve, reason, verify, judge); by default as far as the models allow. A stage
        that needs a model that is not configured is an error before anything runs. `threshold`
        (0-1) keeps only results whose evidence reaches it (`Result.relevance`)."""
        if not text or not text.strip():
            raise LensgraphError("Give a query text.")
        check_stages(stages)
        if stages is not None and STAGES.index(stages) > STAGES.index(self.context.stages):
            raise LensgraphError(
                f"stages={stages!r} needs models this searcher does not have (it runs up to "
                f"{self.context.stages!r}); open it with llm=... and vlm=..."
            )
        check_threshold(threshold)
        state = run_query(self.context_for(k, stages), text, str(ref) if ref is not None else None)
        return self.results_of(state, k, threshold)

    def chat(self, thread_id: str) -> ChatThread:
        """A conversation (kept in SQLite next to the database; the same id resumes it)."""
        return ChatThread(self, thread_id)

    def add_images(self, paths: list[str | os.PathLike]) -> IndexReport:
        """Index these image files (unchanged ones are skipped)."""
        return self.add_files(paths)

    async def asearch(self, text: str, ref: str | os.PathLike | None = None, k: int | None = None,
                      stages: str | None = None, threshold: float | None = None) -> Results:
        return await asyncio.to_thread(self.search, text, ref, k, stages, threshold)

    async def aretrieve(self, *args: Any, **kwargs: Any) -> list[Hit]:
        return await asyncio.to_thread(self.retrieve, *args, **kwargs)

    async def aadd_images(self, paths: list[str | os.PathLike]) -> IndexReport:
        return await asyncio.to_thread(self.add_images, paths)
