"""A searchable view of an index: ids, image and caption vectors, paths and captions taken together
at one write version (`Snapshot`), built once per version and shared by searches (`SnapshotCache`),
with the vectors also kept as memory-mapped files (pipeline/store/vector_cache.py).

The store (pipeline/store/index.py) says what is in Chroma and when it was written; this module
decides when what was read is still good."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.store.vector_cache import VectorCache

log = logging.getLogger("lensgraph")

PAGE = 5000  # rows per Chroma read when loading all vectors or metadata
ATTEMPTS = 8  # loads of a snapshot retried while other processes keep writing


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of the index for a search: ids, image vectors and caption vectors taken
    together at one write version, never mixed from two (a vector or caption must not be paired
    with another image's id). Rows may be read-only memory maps.

    The matrices are column-major (Fortran order): OpenBLAS's matrix-vector product over them runs
    1.3-1.5x faster here than over the same rows stored row-major (bench/RESULTS.md, search speed).
    Rankings are unchanged; scores may differ from a row-major product in the last bit."""

    version: str | None
    ids: list[str]
    images: np.ndarray
    row_of: dict[str, int]
    has_caption: np.ndarray
    """Per row: whether the image has a caption vector."""
    captions: np.ndarray
    """Caption vectors in row order (zeros where `has_caption` is False)."""
    paths: list[str | None]
    """Per row: the image file's path as indexed."""
    caption_texts: list[str | None]
    """Per row: the stored caption."""
    captioned: int
    """How many rows have a caption vector."""


class Store(Protocol):
    """What the cache reads from an index (pipeline/store/index.py: GalleryIndex)."""

    name: str
    images: Any
    captions: Any

    def version(self) -> str | None: ...
    def stored_version(self) -> str | None: ...
    def channel_count(self, channel: str) -> int: ...
    def trusted_until(self) -> float: ...
    def forget(self) -> None: ...
    def all_metadata(self) -> dict[str, dict[str, Any]]: ...
    def metadata(self, ids: Any) -> dict[str, dict[str, Any]]: ...


class SnapshotCache:
    """The current snapshot and the channel matrices of one index, rebuilt when its version or counts move."""

    def __init__(self, index: Store, files: VectorCache | None = None):
        self.index = index
        self.files = files
        self._matrices: dict[str, tuple[tuple[str | None, int], list[str], np.ndarray]] = {}
        self._snapshot: tuple[tuple[str | None, int, int], Snapshot] | None = None
        self._fresh_until = 0.0  # monotonic time until which the snapshot is used without checking its key
        self._lock = threading.RLock()  # searches in threads share one snapshot; it is built once

    def recheck(self) -> None:
        """Check the snapshot's key before its next use (it stays the fallback while writes go on)."""
        self._fresh_until = 0.0

    def clear(self) -> None:
        """After a write: matrices are read again; the snapshot is checked before its next use."""
        with self._lock:
            self._matrices.clear()
            self._fresh_until = 0.0

    def matrix(self, channel: str = "images") -> tuple[list[str], np.ndarray]:
        """All ids and vectors of a channel ('images' or 'captions'), kept until a write changes
        the index's version or count (column-major, see Snapshot; may be a read-only memory map)."""
        index = self.index
        collection = index.images if channel == "images" else index.captions
        if collection is None:
            return [], np.zeros((0, 0), dtype=np.float32)
        key = (index.version(), index.channel_count(channel))  # taken before loading: see vector_cache.py
        with self._lock:
            cached = self._matrices.get(channel)
            if cached and cached[0] == key:
                return cached[1], cached[2]
            version, count = key
            loaded = self.files.load(index.name, channel, version, count) if self.files and version else None
            if loaded is None:
                loaded = load_vectors(collection, count)
                if self.files and version and len(loaded[0]) == count:
                    self.files.store(index.name, channel, version, *loaded)
            self._matrices[channel] = (key, *loaded)
            return loaded

    def current(self) -> Snapshot:
        """The index as of one write version, built once per version and shared by searches.

        Another process may write while this one loads: the version is read again after loading
        (writers change it before and after every write) and the load retried if it moved."""
        if self._snapshot and time.monotonic() < self._fresh_until:  # per search: no key to read
            return self._snapshot[1]
        index = self.index
        snap: Snapshot | None = None
        with self._lock:
            for attempt in range(ATTEMPTS):
                key = (index.version(), index.channel_count("images"), index.channel_count("captions"))
                if self._snapshot and self._snapshot[0] == key:
                    self._fresh_until = index.trusted_until()
                    return self._snapshot[1]
                try:
                    snap = self._build(key[0])
                except Exception as e:  # Chroma paging through rows another process is deleting
                    log.debug("index %s changed while being read (%s); reading again", index.name, e)
                else:
                    if index.stored_version() == key[0]:
                        self._snapshot = (key, snap)
                        self._fresh_until = index.trusted_until()
                        return snap
                index.forget()  # written meanwhile: read again
                self.clear()
                time.sleep(0.05 * attempt)
            # Writes never paused long enough: search the last consistent snapshot (its deleted images are
            # dropped from results by their missing records) or, failing that, the last one read.
            fallback = self._snapshot[1] if self._snapshot else snap
            if fallback is None:
                raise LensgraphError(f"Index {index.name!r} kept changing while being read; try the search again.")
            log.warning("index %s kept changing while being read; searching an earlier version", index.name)
            return fallback

    def _build(self, version: str | None) -> Snapshot:
        ids, images = self.matrix("images")
        cap_ids, cap_matrix = self.matrix("captions")
        row_of: dict[str, int] = {}
        for r, i in enumerate(ids):
            row_of.setdefault(i, r)
        if len(row_of) < len(ids):  # paging met a concurrent write and read a row twice: keep one
            keep = sorted(row_of.values())
            ids, images = [ids[r] for r in keep], np.asfortranarray(images[keep])
            row_of = {i: r for r, i in enumerate(ids)}
        pairs = [(row_of[i], c) for c, i in enumerate(cap_ids) if i in row_of]
        aligned = np.zeros((len(ids), cap_matrix.shape[1] if cap_ids else 0), dtype=np.float32, order="F")
        mask = np.zeros(len(ids), dtype=bool)
        if pairs:
            rows, cols = map(np.array, zip(*pairs))
            aligned[rows] = cap_matrix[cols]
            mask[rows] = True
        records = self._records(version, ids)
        return Snapshot(version, ids, images, row_of, mask, aligned, records["paths"], records["captions"],
                        int(mask.sum()))

    def _records(self, version: str | None, ids: list[str]) -> dict[str, list]:
        """Paths and captions in row order, read once per version (from the file cache when it has them)."""
        index = self.index
        cached = self.files.load_records(index.name, version, ids) if self.files and version else None
        if cached is not None:
            return cached
        meta = index.all_metadata()
        missing = [i for i in ids if i not in meta]  # rows that moved between pages under a concurrent write
        if missing:
            meta.update(index.metadata(missing))
        records = {"ids": ids, "paths": [(meta.get(i) or {}).get("path") for i in ids],
                   "captions": [(meta.get(i) or {}).get("caption") for i in ids]}
        if self.files and version:
            self.files.store_records(index.name, version, records)
        return records


def load_vectors(collection: Any, count: int) -> tuple[list[str], np.ndarray]:
    """Every id and vector, page by page (Chroma returns Python lists: ~20k vectors/s)."""
    ids: list[str] = []
    matrix: np.ndarray | None = None
    for offset in range(0, count, PAGE):
        page = collection.get(include=["embeddings"], limit=PAGE, offset=offset)
        rows = np.asarray(page["embeddings"], dtype=np.float32)
        if not len(rows):
            break
        if matrix is None:  # filled in place: the peak stays near one matrix, not two
            matrix = np.empty((count, rows.shape[1]), dtype=np.float32, order="F")  # see Snapshot
        rows = rows[: count - len(ids)]
        matrix[len(ids) : len(ids) + len(rows)] = rows
        ids.extend(page["ids"][: len(rows)])
    return ids, np.zeros((0, 0), dtype=np.float32) if matrix is None else np.asfortranarray(matrix[: len(ids)])
