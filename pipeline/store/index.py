"""The gallery index: CLIP image vectors and caption vectors in Chroma.

One index is two Chroma collections in cosine space, both keyed by the image's content hash:
- `NAME`: CLIP image embeddings; metadata path, width, height, size, mtime_ns, caption.
  Collection metadata records the encoders that built the index, so queries use the same ones.
- `NAME__captions`: caption text embeddings (CLIP's text tower or a sentence-transformers model),
  the caption as the document.
Chroma runs embedded (a folder, `--db`) or as a server (`--chroma-url`); the code is the same.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from lensgraph.pipeline.errors import EncoderMismatch, IndexNotFound, LensgraphError
from lensgraph.pipeline.settings import Settings
from lensgraph.pipeline.store.snapshot import PAGE, SnapshotCache
from lensgraph.pipeline.store.vector_cache import VectorCache


FORMAT_VERSION = 1
CAPTIONS_SUFFIX = "__captions"
FRESH_SECONDS = 5.0  # how long a count read from Chroma is trusted (other processes may write meanwhile)


def connect(settings: Settings) -> Any:
    """A Chroma client: a server when chroma_url is set, else an embedded database at settings.db."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        url = urlparse(settings.chroma_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise LensgraphError(f"--chroma-url {settings.chroma_url!r} is not an http(s)://host:port URL.")
        try:
            client = chromadb.HttpClient(
                host=url.hostname,
                port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https",
                settings=chroma_settings,
            )
            client.heartbeat()
        except Exception as e:
            raise LensgraphError(
                f"Cannot reach the Chroma server at {settings.chroma_url} ({e}). "
                "Start one with `chroma run --path DB_FOLDER --host 127.0.0.1 --port 8000`, "
                "or drop --chroma-url to use the embedded database."
            ) from None
        return client
    try:
        settings.db.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(settings.db), settings=chroma_settings)
    except Exception as e:
        raise LensgraphError(f"Cannot open the Chroma database at {settings.db}: {e}") from None


def location(settings: Settings) -> str:
    return settings.chroma_url or str(settings.db)


def vector_cache(settings: Settings) -> VectorCache | None:
    """Matrix files inside an embedded database's folder (a server's clients keep none)."""
    return None if settings.chroma_url else VectorCache(Path(settings.db) / "lensgraph-vectors")


def list_indexes(client: Any) -> list[str]:
    names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
    return sorted(n for n in names if not n.endswith(CAPTIONS_SUFFIX))


def batched(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


@dataclass(frozen=True)
class IndexInfo:
    name: str
    location: str
    images: int
    captions: int
    clip: str
    clip_dim: int
    text_encoder: str | None
    text_dim: int | None


class GalleryIndex:
    """A named gallery index in a Chroma database."""

    def __init__(self, client: Any, name: str, where: str, files: VectorCache | None = None):
        self.client = client
        self.name = name
        self.where = where
        self.images = client.get_collection(name)
        meta = self.images.metadata or {}
        if meta.get("lensgraph") != FORMAT_VERSION:
            raise LensgraphError(f"Collection {name!r} in {where} is not a lensgraph index (format {FORMAT_VERSION}).")
        self._captions: Any = None
        self._captions_checked = 0.0
        # Per-query costs must not grow with the gallery: counts and the write version are
        # cached briefly here, the vectors until either changes (in `snapshots`, and in `files`).
        self._counts: dict[str, tuple[float, int]] = {}
        self._version: tuple[float, str | None] | None = None
        self.max_batch = int(client.get_max_batch_size())
        self.snapshots = SnapshotCache(self, files)

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings, client: Any = None) -> GalleryIndex:
        client = client or connect(settings)
        if settings.index not in list_indexes(client):
            known = ", ".join(list_indexes(client)) or "none"
            raise IndexNotFound(
                f"No index named {settings.index!r} in {location(settings)} (indexes there: {known}). "
                f"Build it with `lensgraph index FOLDER --index {settings.index}`."
            )
        return cls(client, settings.index, location(settings), vector_cache(settings))

    @classmethod
    def create_or_open(cls, settings: Settings, clip_spec: str, clip_dim: int, client: Any = None) -> GalleryIndex:
        client = client or connect(settings)
        if settings.index not in list_indexes(client):
            client.create_collection(
                settings.index,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={"lensgraph": FORMAT_VERSION, "clip": clip_spec, "clip_dim": clip_dim},
                embedding_function=None,
            )
        index = cls(client, settings.index, location(settings), vector_cache(settings))
        index.check_encoders(clip=clip_spec)
        if index.version() is None:  # made before versions were kept: start now
            index._bump_version()
        return index

    # -- encoders ----------------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.images.metadata or {})

    @property
    def clip_spec(self) -> str:
        return str(self.meta["clip"])

    @property
    def text_encoder_spec(self) -> str | None:
        return self._caption_meta().get("text_encoder") or None

    def _caption_meta(self) -> dict[str, Any]:
        """What the caption channel was built with: its own collection's metadata (indexes made before
        0.1 kept it in the image collection's)."""
        captions = self.captions
        own = dict(captions.metadata or {}) if captions is not None else {}
        return {k: v for meta in (self.meta, own) for k, v in meta.items() if k in ("text_encoder", "text_dim")}

    def check_encoders(self, clip: str | None = None, text_encoder: str | None = None) -> None:
        """Refuse encoders other than the ones that built this index."""
        if clip and clip != self.clip_spec:
            raise EncoderMismatch(
                f"Index {self.name!r} was built with CLIP {self.clip_spec!r}, not {clip!r}: vectors from "
                "different models cannot be compared. Omit --clip to use the index's own, or build a new "
                "index with --index NEW_NAME."
            )
        if text_encoder and self.text_encoder_spec and text_encoder != self.text_encoder_spec:
            raise EncoderMismatch(
                f"Index {self.name!r} has captions embedded with {self.text_encoder_spec!r}, not {text_encoder!r}. "
                "Omit --text-encoder to use the index's own, or build a new index with --index NEW_NAME."
            )

    def _fresh_meta(self) -> dict[str, Any]:
        """The collection metadata as stored now (`meta` is as of opening; others may have written)."""
        return dict(self.client.get_collection(self.name).metadata or {})

    def _set_version(self, version: str) -> None:
        """The version is the image collection's one changing key. Chroma replaces a collection's
        metadata whole, so this writes the keys fixed at creation (as read when opened) and the new
        version, reading nothing: a read-modify-write across processes could drop another writer's keys.
        Two writers racing both leave a version no reader has seen, which is all a version must do."""
        fixed = {k: v for k, v in self.meta.items() if k not in ("version", "hnsw:space")}
        self.images.modify(metadata={**fixed, "version": version})

    def version(self) -> str | None:
        """A token that changes with every write to the vectors (None for indexes made before
        versions were kept, until their next write)."""
        if self._version is None or time.monotonic() - self._version[0] >= FRESH_SECONDS:
            self._version = (time.monotonic(), self._fresh_meta().get("version"))
        return self._version[1]

    def _bump_version(self) -> None:
        """After (never before) a write: a reader that loaded meanwhile filed its vectors under the
        old version, so the next reader reloads."""
        self._set_version(uuid.uuid4().hex)
        self._version = None
        self.snapshots.recheck()

    # -- caption channel ---------------------------------------------------------------------

    @property
    def captions(self) -> Any:
        """The caption collection, or None when the index has no captions yet."""
        if self._captions is None and time.monotonic() - self._captions_checked > FRESH_SECONDS:
            self._captions_checked = time.monotonic()
            if self.name + CAPTIONS_SUFFIX in {c if isinstance(c, str) else c.name for c in self.client.list_collections()}:
                self._captions = self.client.get_collection(self.name + CAPTIONS_SUFFIX)
        return self._captions

    def ensure_captions(self, text_encoder: str, text_dim: int) -> Any:
        self.check_encoders(text_encoder=text_encoder)
        if self.captions is None:
            self._written()
            self._captions = self.client.get_or_create_collection(
                self.name + CAPTIONS_SUFFIX,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={"lensgraph": FORMAT_VERSION, "text_encoder": text_encoder, "text_dim": text_dim},
                embedding_function=None,
            )
        return self._captions

    # -- reading -----------------------------------------------------------------------------

    def channel_count(self, channel: str) -> int:
        collection = self.images if channel == "images" else self.captions
        if collection is None:
            return 0
        cached = self._counts.get(channel)
        if cached and time.monotonic() - cached[0] < FRESH_SECONDS:
            return cached[1]
        n = int(collection.count())
        self._counts[channel] = (time.monotonic(), n)
        return n

    def _written(self) -> None:
        self.forget()
        self.snapshots.clear()  # the version is re-read after the write (_bump_version)

    def forget(self) -> None:
        """Read the counts and version from Chroma again next time (another process may have written)."""
        self._counts.clear()
        self._version = None

    def trusted_until(self) -> float:
        """The monotonic time until which the counts and version read last are trusted unchecked."""
        read_at = [t for t, _ in self._counts.values()] + ([self._version[0]] if self._version else [])
        if self._captions is None:  # a caption collection made meanwhile is looked for as often
            read_at.append(self._captions_checked)
        return min(read_at, default=0.0) + FRESH_SECONDS

    def stored_version(self) -> str | None:
        """The write version as stored now, uncached."""
        return self._fresh_meta().get("version")

    def count(self) -> int:
        return self.channel_count("images")

    def caption_count(self) -> int:
        return self.channel_count("captions")

    def info(self) -> IndexInfo:
        meta, caption_meta = self.meta, self._caption_meta()
        return IndexInfo(
            name=self.name,
            location=self.where,
            images=self.count(),
            captions=self.channel_count("captions"),
            clip=str(meta["clip"]),
            clip_dim=int(meta["clip_dim"]),
            text_encoder=self.text_encoder_spec,
            text_dim=int(caption_meta["text_dim"]) if caption_meta.get("text_dim") else None,
        )

    def all_metadata(self) -> dict[str, dict[str, Any]]:
        """id -> metadata for every image, read page by page."""
        out: dict[str, dict[str, Any]] = {}
        for offset in range(0, self.count(), PAGE):
            page = self.images.get(include=["metadatas"], limit=PAGE, offset=offset)
            out.update(zip(page["ids"], page["metadatas"]))
        return out

    def metadata(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for chunk in batched(list(ids), self.max_batch):
            page = self.images.get(ids=list(chunk), include=["metadatas"])
            out.update(zip(page["ids"], page["metadatas"]))
        return out

    def vectors(self, ids: Sequence[str], channel: str = "images") -> dict[str, np.ndarray]:
        """Vectors of the given ids (missing ids are absent from the result)."""
        collection = self.images if channel == "images" else self.captions
        out: dict[str, np.ndarray] = {}
        if collection is None:
            return out
        for chunk in batched(list(ids), self.max_batch):
            page = collection.get(ids=list(chunk), include=["embeddings"])
            out.update(zip(page["ids"], np.asarray(page["embeddings"], dtype=np.float32)))
        return out

    def nearest(self, queries: np.ndarray, n: int, channel: str = "images") -> set[str]:
        """Approximate (HNSW) neighbours of each query row; used only to pick candidates."""
        collection = self.images if channel == "images" else self.captions
        if collection is None or n <= 0:
            return set()
        result = collection.query(query_embeddings=queries.tolist(), n_results=n, include=[])
        return {i for row in result["ids"] for i in row}

    # -- writing -----------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write changes the version before and after: a reader that loaded during it (in any
        process) sees the version move and loads again (see `snapshot`)."""
        self._bump_version()
        self._written()
        try:
            yield
        finally:
            self._written()
            self._bump_version()

    def upsert_images(self, ids: list[str], vectors: np.ndarray, metadatas: list[dict[str, Any]]) -> None:
        with self._writing():
            for start in range(0, len(ids), self.max_batch):
                end = start + self.max_batch
                self.images.upsert(ids=ids[start:end], embeddings=vectors[start:end], metadatas=metadatas[start:end])

    def update_metadata(self, ids: list[str], metadatas: list[dict[str, Any]]) -> None:
        with self._writing():  # snapshots hold paths and captions: a new version makes them re-read
            for start in range(0, len(ids), self.max_batch):
                end = start + self.max_batch
                self.images.update(ids=ids[start:end], metadatas=metadatas[start:end])

    def upsert_captions(self, ids: list[str], vectors: np.ndarray, captions: list[str]) -> None:
        with self._writing():
            for start in range(0, len(ids), self.max_batch):
                end = start + self.max_batch
                self.captions.upsert(ids=ids[start:end], embeddings=vectors[start:end], documents=captions[start:end])

    def delete(self, ids: list[str]) -> None:
        with self._writing():
            for chunk in batched(ids, self.max_batch):
                self.images.delete(ids=list(chunk))
                if self.captions is not None:
                    self.captions.delete(ids=list(chunk))
