"""A file cache of an index's vectors next to the embedded Chroma database.

Chroma hands vectors back as Python lists: loading 100k of them takes ~5 s, in every new process
(each CLI search). This keeps each channel's matrix as a .npy file (memory-mapped on load, so
opening is near-instant and processes share the pages; column-major, the layout searches use, see
`lensgraph.pipeline.store.index.Snapshot`) plus its ids in a .json file, and the
images' paths and captions in row order (`records.VERSION.json`), so a search reads no metadata
from Chroma.

Validity: every lensgraph write to an index's vectors stores a fresh random `version` in the
collection's metadata, after the write. A reader takes the version *before* loading from Chroma
and files the result under it, so a write racing the load only makes the next reader reload.
Files are named by version: a reader never mixes one version's ids with another's matrix.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from lensgraph.pipeline.files import atomic_write

log = logging.getLogger("lensgraph")


class VectorCache:
    def __init__(self, folder: Path):
        self.folder = folder

    def _paths(self, name: str, channel: str, version: str) -> tuple[Path, Path]:
        folder = self.folder / name  # one folder per index: names cannot collide
        return folder / f"{channel}.{version}.npy", folder / f"{channel}.{version}.json"

    def load(self, name: str, channel: str, version: str, count: int) -> tuple[list[str], np.ndarray] | None:
        """(ids, read-only matrix) filed under this version, or None (absent, stale or unreadable)."""
        matrix_path, ids_path = self._paths(name, channel, version)
        try:
            ids = json.loads(ids_path.read_text())["ids"]
            matrix = np.load(matrix_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, KeyError):  # absent, removed by a newer writer, or torn
            return None
        if len(ids) != count or matrix.ndim != 2 or matrix.shape[0] != count or matrix.dtype != np.float32:
            return None
        if not matrix.flags.f_contiguous:  # filed row-major by an older lensgraph: reloaded and re-filed
            return None
        return ids, matrix

    def load_records(self, name: str, version: str, ids: list[str]) -> dict[str, list] | None:
        """The per-row records (paths, captions) filed under this version for exactly these ids, or None."""
        path = self.folder / name / f"records.{version}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("ids") == ids else None

    def store_records(self, name: str, version: str, records: dict[str, list]) -> None:
        """File the per-row records under this version and drop other versions'. Best effort."""
        path = self.folder / name / f"records.{version}.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: f.write(json.dumps(records, ensure_ascii=False).encode()))
            for old in path.parent.glob("records.*"):
                if old != path:
                    old.unlink(missing_ok=True)
        except OSError as e:
            log.warning("could not write the record cache in %s (%s); searches still work", self.folder, e)

    def store(self, name: str, channel: str, version: str, ids: list[str], matrix: np.ndarray) -> None:
        """File the matrix under this version and drop other versions of the channel. Best effort:
        a cache that cannot be written only costs the next process a reload."""
        matrix_path, ids_path = self._paths(name, channel, version)
        try:
            matrix_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(matrix_path, lambda f: np.save(f, np.asfortranarray(matrix, dtype=np.float32)))
            atomic_write(ids_path, lambda f: f.write(json.dumps({"ids": ids}).encode()))
            for old in matrix_path.parent.glob(f"{channel}.*"):  # other versions (temp files start with '.')
                if old not in (matrix_path, ids_path):
                    old.unlink(missing_ok=True)
        except OSError as e:
            log.warning("could not write the vector cache in %s (%s); searches still work, loading is slower", self.folder, e)

