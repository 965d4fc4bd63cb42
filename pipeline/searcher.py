"""The library's front door: an index, the encoders that built it, and the reasoning graph.

    searcher = Searcher.open(index="photos", llm="openai:gpt-4o-mini", vlm="openai:gpt-4o-mini")
    results = searcher.search("the same but at night", ref="street.jpg", k=10)
    for r in results:
        print(r.rank, r.score, r.path)
    thread = searcher.chat("my-thread")
    thread.send("a dog on a beach"); thread.send("at sunset")

`search` runs the graph (as many stages as the models allow, or `stages=`); `retrieve` is plain
CLIP/caption retrieval with no models. Encoders load on first use, from the specs the index
recorded when it was built. Every method has an async twin (`asearch`, `aretrieve`, ...).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.encoders import ClipEncoder, TextEncoder, load_clip, load_text_encoder
from pipeline.errors import LensgraphError
from pipeline.images import decode_image, read_file, sha256_bytes
from pipeline.index import GalleryIndex, connect, list_indexes
from pipeline.indexing import (
    IndexReport,
    Progress,
    caption_gallery,
    import_captions,
    index_files,
    index_folder,
    read_captions_jsonl,
)
from pipeline.retrieval import Hit, search
from pipeline.settings import DEFAULT_CLIP, Settings, load_settings


@dataclass(frozen=True)
class Result:
    rank: int
    id: str
    path: str | None
    score: float
    caption: str | None = None
    evidence: dict[str, Any] | None = None
    """Verification and judge evidence (pipeline/evidence.py: result_evidence); None when unverified."""

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
    """One conversation: each `send` refines the target description and retrieves again."""

    def __init__(self, searcher: Searcher, thread_id: str):
        self.searcher = searcher
        self.thread_id = thread_id

    def send(self, text: str, k: int | None = None) -> Results:
        from graphs.chat import send

        state = send(self.searcher.chat_graph, self.searcher.context_for(k, chat=True), self.thread_id, text)
        return self.searcher.results_of(state, k)

    async def asend(self, text: str, k: int | None = None) -> Results:
        return await asyncio.to_thread(self.send, text, k)


class Searcher:
    def __init__(self, settings: Settings, index: GalleryIndex):
        self.settings = settings
        self.index = index

    @classmethod
    def open(cls, settings: Settings | None = None, create: bool = False, **flags: Any) -> Searcher:
        """Open the index named in settings (or in keyword flags, as the CLI takes them:
        index=, db=, llm=, vlm=, ...); with create=True, make it (with settings.clip) if absent."""
        if settings is None:
            settings = load_settings(**flags)
        elif flags:
            settings = settings.model_copy(update=flags)
        client = connect(settings)
        if create and settings.index not in list_indexes(client):
            spec = settings.clip or DEFAULT_CLIP
            clip = load_clip(spec, settings.device)  # fail on missing weights before creating anything
            index = GalleryIndex.create_or_open(settings, spec, clip.dim, client)
            searcher = cls(settings, index)
            searcher.__dict__["clip"] = clip
            return searcher
        index = GalleryIndex.open(settings, client)
        index.check_encoders(clip=settings.clip, text_encoder=settings.text_encoder)
        return cls(settings, index)

    @functools.cached_property
    def clip(self) -> ClipEncoder:
        return load_clip(self.index.clip_spec, self.settings.device)

    @functools.cached_property
    def text_encoder_spec(self) -> str:
        return self.index.text_encoder_spec or self.settings.text_encoder or "clip"

    @functools.cached_property
    def text_encoder(self) -> TextEncoder:
        spec = self.text_encoder_spec
        return load_text_encoder(spec, self.clip if spec == "clip" else None, self.settings.device)

    def add_folder(
        self,
        folder: str | os.PathLike,
        captions: str | os.PathLike | None = None,
        prune: bool = False,
        progress: Progress | None = None,
    ) -> IndexReport:
        """Index new and changed images under folder; optionally import captions from a JSONL file."""
        entries = read_captions_jsonl(captions) if captions else None  # a bad file fails before any work
        s = self.settings
        report = index_folder(
            self.index, folder, lambda: self.clip,
            batch_size=s.batch_size, workers=s.workers, max_pixels=s.max_pixels, prune=prune, progress=progress,
        )
        if entries is not None:
            caption_report = self.import_captions(entries, root=Path(folder).resolve())
            report.captions_added = caption_report.captions_added
            report.captions_unchanged = caption_report.captions_unchanged
            report.captions_unmatched = caption_report.captions_unmatched
            report.seconds += caption_report.seconds
        return report

    def add_files(self, paths: list[str | os.PathLike], progress: Progress | None = None) -> IndexReport:
        """Index exactly these image files (a benchmark's gallery, say); unchanged ones are skipped."""
        s = self.settings
        return index_files(
            self.index, paths, lambda: self.clip,
            batch_size=s.batch_size, workers=s.workers, max_pixels=s.max_pixels, progress=progress,
        )

    def import_captions(self, entries: list[dict[str, str]], root: str | os.PathLike | None = None) -> IndexReport:
        """Embed captions ({"id"|"path", "caption"}) into the caption channel."""
        return import_captions(self.index, entries, self.text_encoder, self.text_encoder_spec, root=root)

    def caption_missing(self, captioner_spec: str, progress: Progress | None = None) -> IndexReport:
        """Caption every image without a caption, with a vision model (`--caption-with SPEC`)."""
        from pipeline.backends import build_backend
        from pipeline.models import CallCache, Model
        from pipeline.prompts import load_prompt_set

        s = self.settings
        if captioner_spec == "caption":
            raise LensgraphError("--caption-with needs a vision model (openai:MODEL or hf:REPO_OR_PATH), not 'caption'.")
        prompt = load_prompt_set(s.prompts)["caption"].render()
        cache = None if s.no_cache else CallCache(s.cache_path)
        captioner = Model(captioner_spec, build_backend(captioner_spec, s, s.vlm_base_url), cache, retries=s.retries)
        return caption_gallery(
            self.index, captioner, prompt, self.text_encoder, self.text_encoder_spec,
            workers=s.max_concurrency, progress=progress,
        )

    def embed_reference(self, ref: str | os.PathLike | bytes) -> tuple[str, np.ndarray]:
        """(content hash, CLIP image vector) of a reference image given as a path or bytes."""
        data = ref if isinstance(ref, bytes) else read_file(ref)
        image = decode_image(data, "<reference>" if isinstance(ref, bytes) else str(ref), self.settings.max_pixels)
        return sha256_bytes(data), self.clip.encode_images([image])[0]

    def _check_searchable(self, k: int) -> None:
        if k < 1:
            raise LensgraphError(f"k must be at least 1, got {k}.")
        if self.index.count() == 0:
            raise LensgraphError(
                f"Index {self.index.name!r} is empty. Add images with `lensgraph index FOLDER --index {self.index.name}`."
            )

    def text_queries(self, texts: list[str], tau: float) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(CLIP rows for the image channel, caption-encoder rows for the caption channel); a channel
        that tau switches off is not encoded, so caption-only search never loads CLIP."""
        has_captions = self.index.captions is not None
        image_rows = self.clip.encode_texts(texts) if tau < 1.0 or not has_captions else None
        caption_rows = self.text_encoder.encode_texts(texts) if tau > 0.0 and has_captions else None
        return image_rows, caption_rows

    def search_texts(
        self, texts: list[str], k: int = 10, tau: float | None = None, exclude: Collection[str] = (),
        weights: list[float] | None = None, include: Collection[str] = (),
    ) -> list[Hit]:
        """Top-k for several descriptions of one target; scores are averaged over them (weighted
        by `weights`, one per text, when given). `include`: ids also scored below the top-k (see
        `pipeline.retrieval.search`)."""
        self._check_searchable(k)
        tau = self.settings.tau if tau is None else tau
        image_rows, caption_rows = self.text_queries(texts, tau)
        if weights is not None:  # the mean of rescaled rows is the weighted mean of the scores
            # normalised by the positive weights: a negative term (`- "people"`) moves away from its text
            positive = sum(w for w in weights if w > 0)
            if positive <= 0:
                raise LensgraphError("A search needs at least one term with a positive weight.")
            scale = np.asarray(weights, dtype=np.float32) * (len(weights) / float(positive))
            image_rows = None if image_rows is None else image_rows * scale[:, None]
            caption_rows = None if caption_rows is None else caption_rows * scale[:, None]
        return search(
            self.index,
            image_queries=image_rows,
            caption_queries=caption_rows,
            k=k,
            tau=tau,
            exclude=exclude,
            include=include,
            exact_limit=self.settings.exact_limit,
        )

    def retrieve(
        self,
        text: str | None = None,
        ref: str | os.PathLike | bytes | None = None,
        k: int = 10,
        tau: float | None = None,
        exclude: Collection[str] = (),
    ) -> list[Hit]:
        """Plain retrieval: text -> images, reference image -> similar images, or both (the sum of
        their CLIP vectors, a zero-shot composed baseline). The reference is never returned."""
        if not text and ref is None:
            raise LensgraphError("Give a query text, a reference image, or both.")
        if ref is None:
            return self.search_texts([text], k, tau, exclude)
        self._check_searchable(k)
        tau = self.settings.tau if tau is None else tau
        ref_id, image_query = self.embed_reference(ref)
        caption_rows = None
        if text:  # the image channel always takes the text too: the reference alone is not the target
            image_query = image_query + self.clip.encode_texts([text])[0]
            if tau > 0.0 and self.index.captions is not None:
                caption_rows = self.text_encoder.encode_texts([text])
            image_query = image_query / max(float(np.linalg.norm(image_query)), 1e-12)
        return search(
            self.index,
            image_queries=image_query,
            caption_queries=caption_rows,
            k=k,
            tau=tau,
            exclude={*exclude, ref_id},
            exact_limit=self.settings.exact_limit,
        )

    # -- the reasoning graph ---------------------------------------------------------------------

    @functools.cached_property
    def context(self) -> Any:
        """The graph's runtime context (models, prompts, cache), built on first use."""
        from graphs.runner import open_context

        return open_context(self.settings, self)

    @functools.cached_property
    def chat_graph(self) -> Any:
        from graphs.chat import build_chat_graph, sqlite_checkpointer

        return build_chat_graph(sqlite_checkpointer(self.settings.db.parent / "chats.sqlite"))

    def context_for(self, k: int | None, stages: str | None = None, chat: bool = False) -> Any:
        """The shared context, or a copy with another k / stages (the shared one is never mutated)."""
        import dataclasses

        ctx = self.context
        changes: dict[str, Any] = {}
        if k is not None and k != ctx.k:
            changes["k"] = k
        if stages is not None and stages != ctx.stages:
            changes["stages"] = stages
        if chat and ctx.stages not in ("retrieve", "reason"):
            changes["stages"] = "reason"
        return dataclasses.replace(ctx, **changes) if changes else ctx

    def results_of(self, state: dict[str, Any], k: int | None = None, threshold: float | None = None) -> Results:
        """The graph's final candidates as ranked Results (with captions and evidence), plus the state
        as explanation. With a threshold, results whose relevance is below it (or unknown) are dropped."""
        from pipeline.evidence import result_evidence

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
        from graphs.runner import run_query

        if not text or not text.strip():
            raise LensgraphError("Give a query text.")
        from graphs.context import STAGE_ORDER

        if stages is not None and stages not in STAGE_ORDER:
            raise LensgraphError(f"stages is one of {', '.join(STAGE_ORDER)}, not {stages!r}.")
        if stages is not None and STAGE_ORDER.index(stages) > STAGE_ORDER.index(self.context.stages):
            raise LensgraphError(
                f"stages={stages!r} needs models this searcher does not have (it runs up to "
                f"{self.context.stages!r}); open it with llm=... and vlm=..."
            )
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise LensgraphError(f"threshold is a probability between 0 and 1, not {threshold}.")
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
