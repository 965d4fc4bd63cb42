"""Reading photos the way users actually have them.

Every image is identified by the sha256 of its file bytes, decoded with its EXIF orientation
applied, and converted to RGB whatever its mode. A file that cannot be read raises
`ImageLoadError` with a one-line reason; callers that walk a folder report it and go on.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from lensgraph.pipeline.errors import ImageChanged, ImageLoadError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif", ".ppm", ".pgm"}
)
DEFAULT_MAX_PIXELS = 100_000_000  # a 10k x 10k photo; larger is treated as a decompression bomb

_strict_lock = threading.Lock()
_strict_users = 0  # lensgraph decodes in progress, across threads
_outside_value = False  # LOAD_TRUNCATED_IMAGES as it was before the first of them


@contextmanager
def strict_decoding() -> Iterator[None]:
    """Truncated files must fail loudly, not decode as grey bands: Pillow's LOAD_TRUNCATED_IMAGES is
    off inside this block. The flag is process-wide, so it is set only while lensgraph decodes and
    the embedding program's value comes back when the last concurrent decode ends (decodes run in
    parallel; they share one save and restore instead of queueing on a lock)."""
    global _strict_users, _outside_value
    with _strict_lock:
        if _strict_users == 0:
            _outside_value = ImageFile.LOAD_TRUNCATED_IMAGES
        _strict_users += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        with _strict_lock:
            _strict_users -= 1
            if _strict_users == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _outside_value


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_unchanged(image_id: str, content_id: str, shown: str) -> None:
    """That a file still holds the image indexed as `image_id` (`content_id`: the sha256 of its bytes
    now). A file changed since indexing is another image: no model judges it, no page shows it, as this one."""
    if content_id != image_id:
        raise ImageChanged(f"{shown} changed since it was indexed; index its folder again (`lensgraph index`).")


def file_sha256(path: str | os.PathLike) -> str:
    """The image's identity: sha256 of the file bytes (streamed, so large files are fine)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def iter_image_files(root: str | os.PathLike) -> Iterator[Path]:
    """Image files below `root` by extension, recursively, in a stable (sorted) order.

    Hidden files and folders are skipped. Symlinks are followed like ordinary files.
    """
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                yield Path(dirpath) / name


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and float greyscale: stretch to 8 bit instead of clipping to white.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.round().astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes to an upright RGB image, or raise ImageLoadError with a short reason."""
    img = decode_upright(data, name, max_pixels)
    try:
        return to_rgb(img)
    except (OSError, ValueError) as e:
        raise ImageLoadError(name, f"cannot convert its {img.mode} pixels to RGB ({e})") from None


def decode_upright(data: bytes, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes with EXIF orientation applied, keeping the image's own mode (alpha,
    palette, 16 bit), or raise ImageLoadError with a short reason."""
    if not data:
        raise ImageLoadError(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings(), strict_decoding():
            # Our own max_pixels check below decides; Pillow still refuses > 2x its MAX_IMAGE_PIXELS.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageLoadError(
                    name,
                    f"too large ({width}x{height} = {width * height:,} pixels > limit {max_pixels:,}); "
                    "raise max_pixels if the file is trusted",
                )
            img.load()
            return ImageOps.exif_transpose(img)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not an image Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(name, f"too large, refused as a possible decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(name, f"truncated or corrupt image ({e})") from None


def read_file(path: str | os.PathLike) -> bytes:
    """Read a file's bytes, turning OS errors into ImageLoadError."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ImageLoadError(str(path), "unreadable: file not found (broken link?)") from None
    except IsADirectoryError:
        raise ImageLoadError(str(path), "unreadable: is a directory") from None
    except OSError as e:
        raise ImageLoadError(str(path), f"unreadable: {e.strerror or e}") from None


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open one image file as upright RGB."""
    return decode_image(read_file(path), str(path), max_pixels)
