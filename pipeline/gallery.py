"""A gallery: a Chroma index, the encoders that built it, and plain retrieval over it.

    gallery = Gallery.open(index="photos")
    gallery.add_folder("~/Pictures")
    hits = gallery.retrieve("a dog on a beach", k=10)

Encoders load on first use, from the specs the index recorded when it was built. The reasoning
graph uses a gallery (graphs/context.py); the front doors (adapters/searcher.py: `Searcher`) add
the graph on top.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from lensgraph.pipeline.models.encoders import ClipEncoder, TextEncoder, load_clip, load_text_encoder
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.images import decode_image, read_file, sha256_bytes
from lensgraph.pipeline.store.index import GalleryIndex, connect, list_indexes
from lensgraph.pipeline.ingest.indexing import (
    IndexReport,
    Progress,
    caption_gallery,
    import_captions,
    index_files,
    index_folder,
    read_captions_jsonl,
)
from lensgraph.pipeline.ingest.ray_job import RayJob
from lensgraph.pipeline.store.retrieval import Hit, search
from lensgraph.pipeline.settings import DEFAULT_CLIP, Settings, load_settings

G = TypeVar("G", bound="Gallery")


class Gallery:
    def __init__(self, settings: Settings, index: GalleryIndex):
        self.settings = settings
        self.index = index
        self._texts = TextVectorCache()

    @classmethod
    def open(cls: type[G], settings: Settings | None = None, create: bool = False, **flags: Any) -> G:
        """Open the index named in settings (or in keyword flags, as the CLI takes them:
        index=, db=, llm=, vlm=, ...); with create=True, make it (with settings.clip) if absent."""
        if settings is None:
            settings = load_settings(**flags)
        elif flags:
            settings = settings.model_copy(update=flags)
        client = connect(settings)
        if create and settings.index not in list_indexes(client):
            spec = settings.clip or DEFAULT_CLIP
            clip = load_clip(spec, settings.device, settings.clip_runtime)  # fail on missing weights before creating anything
            index = GalleryIndex.create_or_open(settings, spec, clip.dim, client)
            gallery = cls(settings, index)
            gallery.__dict__["clip"] = clip
            return gallery
        index = GalleryIndex.open(settings, client)
        index.check_encoders(clip=settings.clip, text_encoder=settings.text_encoder)
        return cls(settings, index)

    @functools.cached_property
    def clip(self) -> ClipEncoder:
        return load_clip(self.index.clip_spec, self.settings.device, self.settings.clip_runtime)

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
        ray: RayJob | None = None,
    ) -> IndexReport:
        """Index new and changed images under folder; optionally import captions from a JSONL file.
        With `ray`, reading and embedding run as a Ray Data job (pipeline/ingest/ray_job.py)."""
        entries = read_captions_jsonl(captions) if captions else None  # a bad file fails before any work
        s = self.settings
        report = index_folder(
            self.index, folder, lambda: self.clip,
            batch_size=s.batch_size, workers=s.workers, max_pixels=s.max_pixels, prune=prune, progress=progress, ray=ray,
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
        from lensgraph.pipeline.models.backends import build_backend
        from lensgraph.pipeline.models.calls import CallCache, Model
        from lensgraph.pipeline.models.prompts import load_prompt_set

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
        image_rows = self._texts.encode("clip", self.clip.encode_texts, texts) if tau < 1.0 or not has_captions else None
        caption_rows = None
        if tau > 0.0 and has_captions:
            caption_rows = self._texts.encode(self.text_encoder_spec, self.text_encoder.encode_texts, texts)
        return image_rows, caption_rows

    def search_texts(
        self, texts: list[str], k: int = 10, tau: float | None = None, exclude: Collection[str] = (),
        weights: list[float] | None = None, include: Collection[str] = (),
    ) -> list[Hit]:
        """Top-k for several descriptions of one target; scores are averaged over them (weighted
        by `weights`, one per text, when given). `include`: ids also scored below the top-k (see
        `lensgraph.pipeline.store.retrieval.search`)."""
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
            image_query = image_query + self._texts.encode("clip", self.clip.encode_texts, [text])[0]
            if tau > 0.0 and self.index.captions is not None:
                caption_rows = self._texts.encode(self.text_encoder_spec, self.text_encoder.encode_texts, [text])
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


class TextVectorCache:
    """The last few hundred query texts' vectors per encoder: a repeated query (a page refreshed, a
    chat turn, an agent retrying) costs no text-tower pass, which is most of a retrieval's time."""

    def __init__(self, size: int = 512):
        self.size = size
        self._rows: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, encoder: str, encode: Callable[[list[str]], np.ndarray], texts: list[str]) -> np.ndarray:
        """Rows for `texts` from `encode` (the encoder named `encoder`), computing only the unseen ones."""
        with self._lock:
            found = {t: self._rows[(encoder, t)] for t in texts if (encoder, t) in self._rows}
            for text in found:
                self._rows.move_to_end((encoder, text))
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            rows = np.asarray(encode(missing), dtype=np.float32)
            found.update(zip(missing, rows))
            with self._lock:
                self._rows.update(((encoder, t), row) for t, row in zip(missing, rows))
                while len(self._rows) > self.size:
                    self._rows.popitem(last=False)
        return np.stack([found[t] for t in texts])
