"""Thumbnails of indexed images: made once, kept as JPEG files on disk (next to the database),
named by image id and size. An image id is the sha256 of the file's bytes, so a cached thumbnail
never goes stale: changed pixels are a different id."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

from lensgraph.pipeline.files import atomic_write
from lensgraph.pipeline.images import decode_image

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
SIZES = (64, 128, 256, 512, 1024)
"""The sizes served (a request is rounded up to the next one), so the cache stays small."""


def thumbnail_size(requested: int) -> int:
    return next((s for s in SIZES if s >= requested), SIZES[-1])


class ThumbnailCache:
    def __init__(self, folder: Path, max_pixels: int):
        self.folder = Path(folder)
        self.max_pixels = max_pixels

    def path(self, image_id: str, size: int) -> Path:
        if not SAFE_ID.fullmatch(image_id):  # ids name files here: nothing that could leave the folder (nor a newline)
            raise ValueError(f"not an image id: {image_id[:40]!r}")
        return self.folder / f"{image_id}-{size}.jpg"

    def get(self, image_id: str, size: int, read: Callable[[], bytes]) -> Path:
        """The thumbnail's file, made from `read()` (the image's bytes) when not cached yet."""
        target = self.path(image_id, size)
        if target.is_file():
            return target
        image = decode_image(read(), image_id, self.max_pixels)
        image.thumbnail((size, size))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=85)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda f: f.write(buf.getvalue()))  # a concurrent reader sees the whole file or none
        return target
