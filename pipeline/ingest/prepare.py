"""One file made ready for indexing: read, hashed, and (when its content is new) decoded and
preprocessed. Shared by the plain indexer (pipeline/ingest/indexing.py) and the Ray job
(pipeline/ingest/ray_job.py), which both import it and not each other."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensgraph.pipeline.errors import ImageLoadError
from lensgraph.pipeline.images import decode_image, read_file, sha256_bytes


@dataclass
class PreparedFile:
    path: str
    id: str
    size: int
    mtime_ns: int
    width: int = 0
    height: int = 0
    tensor: Any = None  # None when the content is already in the index
    vector: Any = None  # the embedding, when a Ray job made it (pipeline/ingest/ray_job.py)


def prepare_file(item: tuple[Path, os.stat_result], known: Collection[str], preprocess: Callable[[Any], Any] | None,
                 max_pixels: int) -> PreparedFile | ImageLoadError:
    """Read and hash one file; decode and preprocess it only when its content is not indexed yet."""
    path, st = item
    try:
        data = read_file(path)
        prepared = PreparedFile(str(path), sha256_bytes(data), st.st_size, st.st_mtime_ns)
        if prepared.id not in known:
            image = decode_image(data, str(path), max_pixels)
            prepared.width, prepared.height = image.size
            prepared.tensor = preprocess(image) if preprocess else image
        return prepared
    except ImageLoadError as e:
        return e
