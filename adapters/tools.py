"""lensgraph as a tool for agents: the operations, with the checks an untrusted caller needs.

Adapters (LangChain, OpenAI function calling, MCP) all call `ImageTools`, so every one of them
gets the same limits:
- image paths are resolved (symlinks and `..` included) and must lie under a configured root; a
  file is opened once, checked as opened, and its bytes are what every later step uses;
- reference images may also come as data URLs or bytes, up to a size cap;
- k, text length and concurrent calls are bounded; indexing is off unless enabled;
- results name images relative to the root they lie under (path null when under none), so no
  absolute path leaves the boundary; paths in messages are shortened the same way;
- results, errors and logs carry no secrets (`lensgraph.pipeline.redaction`).
A refusal raises `ToolError` with a message meant for the calling model; `failure_message` turns
any other exception into such a message, for the adapters.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import stat
import tempfile
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lensgraph.adapters.searcher import Searcher
from lensgraph.graphs.context import Context
from lensgraph.graphs.runner import run_query
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.files import atomic_write
from lensgraph.pipeline.redaction import redact
from lensgraph.pipeline.settings import Settings, check_threshold

__all__ = ["Busy", "Forbidden", "ImageTools", "NotFound", "ToolConfig", "ToolError", "TooLarge", "TooManyCalls", "redact"]  # redact: still importable from here

log = logging.getLogger("lensgraph.tools")

DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;base64)?,(.*)$", re.DOTALL)
"""A data URL: any media type is matched, so one that is not an image is refused as such."""
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/\\-])/[^\s'\"<>|:;,()\[\]{}]+")
"""A POSIX absolute path inside a message (not a URL's path: that follows the host)."""
OUTSIDE_ROOTS = "That path is outside the folders this tool may read."


CHAT_REFERENCES = "chat-references"


class ToolError(LensgraphError):
    """A refused or failed tool call; the message is safe to show the calling model. Its subclasses
    say what kind of refusal it is, for front doors that answer with a code (HTTP)."""


class Forbidden(ToolError):
    """A path outside the allowed folders."""


class NotFound(ToolError):
    """A file, id or image that does not exist (or is not available here)."""


class TooLarge(ToolError):
    """An image over the size cap."""


class TooManyCalls(ToolError):
    """More concurrent calls than the limit."""


class Busy(ToolError):
    """A shared resource (a worker pool) is taken; trying again shortly may succeed."""


@dataclass(frozen=True)
class ToolConfig:
    roots: tuple[Path, ...] = ()
    """Folders whose images (and, for indexing, subfolders) callers may name by path."""
    allow_indexing: bool = False
    max_k: int = 50
    max_text_chars: int = 2000
    max_image_bytes: int = 10_000_000
    max_concurrent: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "roots", tuple(Path(r).expanduser().resolve() for r in self.roots))


@dataclass
class ImageTools:
    settings: Settings
    config: ToolConfig = field(default_factory=ToolConfig)

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.config.max_concurrent)
        self._searcher: Searcher | None = None
        self._searcher_lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def searcher(self) -> Searcher:
        """The index and the graph, opened on first use (models and index load once)."""
        with self._searcher_lock:
            if self._searcher is None:
                self._searcher = Searcher.open(self.settings)
            return self._searcher

    @property
    def context(self) -> Context:
        return self.searcher.context

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            raise TooManyCalls(f"Too many concurrent calls (limit {self.config.max_concurrent}); try again shortly.")
        try:
            yield
        except ToolError:
            raise
        except LensgraphError as e:
            raise ToolError(self.public_text(str(e))) from None
        finally:
            self._slots.release()

    def check_text(self, text: str, what: str = "query") -> str:
        if not isinstance(text, str) or not text.strip():
            raise ToolError(f"The {what} is empty.")
        if len(text) > self.config.max_text_chars:
            raise ToolError(f"The {what} is {len(text)} characters; the limit is {self.config.max_text_chars}.")
        return text.strip()

    def check_k(self, k: int) -> int:
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= self.config.max_k:
            raise ToolError(f"k must be a whole number from 1 to {self.config.max_k}.")
        return k

    # -- paths: what a caller's path names, and how results name files -------------------------

    def _inside(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self.config.roots)

    def _locate(self, path: str | os.PathLike) -> Path:
        """The path a caller means: an absolute one as given; a relative one (the way results name
        files) under the first root that holds it."""
        given = Path(path).expanduser()
        if given.is_absolute() or not self.config.roots:
            return given
        candidates = [root / given for root in self.config.roots]
        return next((c for c in candidates if os.path.lexists(c)), candidates[0])

    def _resolve(self, path: str | os.PathLike, what: str = "image file") -> Path:
        """The real path of an existing file or folder under a root, else a ToolError. The roots are
        checked before existence, so a caller learns nothing about what exists outside them."""
        try:
            candidate = self._locate(path)
            if not self._inside(candidate.resolve()):
                raise Forbidden(OUTSIDE_ROOTS)
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            raise NotFound(f"No such {what}: {Path(path).name}.") from None
        if not self._inside(resolved):  # a link that changed between the two resolutions
            raise Forbidden(OUTSIDE_ROOTS)
        return resolved

    def allowed_path(self, path: str | os.PathLike) -> Path:
        """The resolved path, if it is an existing file under a root; else a ToolError. A check only:
        to use a file, `read_image` it (checking a path and opening it later races a swapped link)."""
        resolved = self._resolve(path)
        if not resolved.is_file():
            raise ToolError(f"Not a file: {Path(path).name}.")
        if resolved.stat().st_size > self.config.max_image_bytes:
            raise TooLarge(f"The image is larger than {self.config.max_image_bytes:,} bytes.")
        return resolved

    def read_image(self, path: str | os.PathLike) -> bytes:
        """The bytes of an image file under a root, read once, from the file that was checked: the
        real path is opened without following a final link, and after opening it must still be the
        path's real file (same device and inode), so a path swapped meanwhile is refused."""
        name = Path(path).name
        real = self.allowed_path(path)  # under a root, a regular file, within the size cap
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(real, flags)  # O_NONBLOCK: a FIFO put in its place cannot hang the call
        except OSError as e:  # ELOOP: the file was replaced by a link after the check
            raise ToolError(f"Could not open {name} ({e.strerror}); check that it is a readable image file.") from None
        with open(fd, "rb", closefd=True) as f:
            opened = os.fstat(f.fileno())
            try:
                now = self._resolve(path).stat()
            except OSError:
                now = None
            if (not stat.S_ISREG(opened.st_mode) or now is None
                    or (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino)):
                raise ToolError(f"{name} changed while being read (a file or link was replaced); try again.")
            data = f.read(self.config.max_image_bytes + 1)
        if len(data) > self.config.max_image_bytes:
            raise TooLarge(f"The image is larger than {self.config.max_image_bytes:,} bytes.")
        return data

    def image_of(self, image_id: str) -> bytes:
        """The bytes of an indexed image, by id, if its file lies under a root and still holds the
        indexed content (a file changed since indexing is another image)."""
        from lensgraph.pipeline.images import check_unchanged, sha256_bytes

        path = self.searcher.index.metadata([image_id]).get(image_id, {}).get("path")
        if not path or self.public_path(path) is None:
            raise NotFound("No image with that id under the allowed folders.")
        data = self.read_image(path)
        check_unchanged(image_id, sha256_bytes(data), "That image's file")
        return data

    def thumbnail(self, image_id: str, size: int = 256) -> tuple[str, bytes]:
        """(MIME type, bytes) of an indexed image fitted to `size` pixels on its longest side."""
        from lensgraph.pipeline.models.calls import ImageInput

        if not 16 <= size <= 1024:
            raise ToolError("A thumbnail is 16 to 1024 pixels on its longest side.")
        return ImageInput.from_bytes(self.image_of(image_id)).for_model(size)

    def public_path(self, path: str | os.PathLike | None) -> str | None:
        """How a result names a file: relative to the root it lies under, in the form the tools take
        back (it must lead to the same file again); None when under no root, so no absolute path
        outside the roots is shown."""
        if not path:
            return None
        try:
            real = Path(path).resolve()
            for root in self.config.roots:
                if real.is_relative_to(root):
                    name = real.relative_to(root).as_posix()
                    if self._locate(name).resolve() == real:  # an earlier root may hold the same name
                        return name
        except (OSError, RuntimeError, ValueError):
            pass
        return None

    def _short_path(self, match: re.Match[str]) -> str:
        text = match.group(0)
        first = text.lstrip("/").split("/", 1)[0]
        if not os.path.isdir("/" + first):  # "/v1/chat/completions" is an HTTP route, not a file
            return text
        return self.public_path(text) or Path(text).name or text

    def public_text(self, text: str) -> str:
        """A message as callers may see it: secrets redacted, absolute file paths shortened to the
        name relative to their root (or the bare file name outside the roots)."""
        return ABSOLUTE_PATH.sub(self._short_path, redact(text, self.settings))

    def failure_message(self, error: BaseException, operation: str = "the tool call") -> str:
        """What a caller is told about any exception: a refusal or a lensgraph error as it is, anything
        else as an internal error; always redacted, and saying what to do. Unexpected failures are
        logged with their (redacted) traceback, for the operator."""
        try:
            if isinstance(error, LensgraphError):
                return self.public_text(str(error))
            log.error("%s failed:\n%s", operation, redact("".join(traceback.format_exception(error)), self.settings))
            detail = self.public_text(f"{type(error).__name__}: {error}")
        except Exception:  # never let reporting leak what redaction could not check
            detail = type(error).__name__
        return (f"Internal error ({detail}). The request may be fine: try again; if it keeps failing, "
                "the operator should check the server log.")

    def image_bytes(self, image: str | bytes) -> bytes:
        """Bytes of an image given as a path under a root, a data URL, or raw bytes (size-capped)."""
        if isinstance(image, (bytes, bytearray)):
            data = bytes(image)
        elif isinstance(image, str) and image.startswith("data:"):
            match = DATA_URL.match(image)
            if match and match.group(1) and not match.group(1).lower().startswith("image/"):
                raise ToolError("A data URL must carry an image media type such as image/png: data:image/png;base64,....")
            if not match or not match.group(2):
                raise ToolError("A data URL must be base64: data:image/...;base64,....")
            if len(match.group(3)) > self.config.max_image_bytes * 4 // 3 + 4:
                raise TooLarge(f"The image is larger than {self.config.max_image_bytes:,} bytes.")
            try:
                data = base64.b64decode(match.group(3), validate=True)
            except (binascii.Error, ValueError):
                raise ToolError("The data URL is not valid base64.") from None
        elif isinstance(image, str):
            return self.read_image(image)
        else:
            raise ToolError("An image is a file path, a data URL, or bytes.")
        if len(data) > self.config.max_image_bytes:
            raise TooLarge(f"The image is larger than {self.config.max_image_bytes:,} bytes.")
        return data

    @contextmanager
    def reference_file(self, image: str | bytes | None) -> Iterator[str | None]:
        """A file for the graph, which takes a path: a private temp copy of the image's bytes, read
        once here (a caller's path is never handed on, so nothing reopens it after the check)."""
        if image is None:
            yield None
            return
        data = self.image_bytes(image)
        from lensgraph.pipeline.images import decode_image

        decode_image(data, "<reference>", self.settings.max_pixels)  # refuse non-images before any work
        with tempfile.TemporaryDirectory(prefix="lensgraph-ref-") as tmp:
            path = Path(tmp) / "reference.img"
            path.write_bytes(data)
            yield str(path)

    def kept_reference(self, image: str | bytes) -> str:
        """A file for a chat thread's reference, which the thread reads again at every later turn:
        the image's bytes, read once here and checked to be an image, kept under the name of their
        sha256 in `chat-references/` beside the thread store (a thread outlives this process)."""
        from lensgraph.pipeline.images import decode_image, sha256_bytes

        data = self.image_bytes(image)
        decode_image(data, "<reference>", self.settings.max_pixels)
        path = self.chat_references / f"{sha256_bytes(data)}.img"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: f.write(data))  # whole or absent for a concurrent turn
        return str(path)

    @property
    def chat_references(self) -> Path:
        return self.settings.db.parent / CHAT_REFERENCES

    def reference_id(self, reference: str | None) -> str | None:
        """The id (sha256) of a reference kept by `kept_reference`; None for any other (a CLI thread's
        own path is not shown)."""
        if not reference or Path(reference).parent != self.chat_references:
            return None
        return Path(reference).stem

    # -- the tools -------------------------------------------------------------------------------

    def search_images(self, query: str, reference_image: str | bytes | None = None, k: int = 10,
                      threshold: float | None = None) -> dict[str, Any]:
        """Find gallery images for a description, or for a reference image plus a change to it.
        With a threshold (0-1), only results whose evidence reaches it are returned."""
        query, k = self.check_text(query), self.check_k(k)
        check_threshold(threshold)
        with self.slot(), self.reference_file(reference_image) as reference:
            searcher = self.searcher
            ctx = searcher.context
            state = run_query(ctx if k <= ctx.settings.k else searcher.context_for(k), query, reference)
            results = [{**asdict(r), "path": self.public_path(r.path), "relevance": r.relevance}
                       for r in searcher.results_of(state, k, threshold)]
            return {
                "query": query,
                "reference_caption": state.get("caption") if reference else None,
                "descriptions": state.get("descriptions", []),
                "stages": [t["stage"] for t in state.get("trace", [])],
                "warnings": [self.public_text(w) for t in state.get("trace", []) for w in t.get("warnings", [])],
                "results": results,
            }

    def describe_image(self, image: str | bytes) -> dict[str, Any]:
        """The stored caption of an image, or a new one from the captioner."""
        with self.slot():
            data = self.image_bytes(image)
            from lensgraph.pipeline.models.calls import ImageInput, caption_image

            picture = ImageInput.from_bytes(data)
            ctx = self.context
            stored = ctx.gallery.index.metadata([picture.id]).get(picture.id, {}).get("caption")
            if stored:
                return {"id": picture.id, "caption": stored, "source": "index"}
            if ctx.models.captioner is None:
                raise ToolError("This image has no stored caption and no captioner (vision model) is configured.")
            picture.pil()  # a non-image fails here with a clear reason
            reply = caption_image(ctx.models.captioner, ctx.prompts["caption"].render(), picture, stage="describe")
            return {"id": picture.id, "caption": reply.text, "source": ctx.models.captioner.spec}

    def index_images(self, folder: str) -> dict[str, Any]:
        """Add the images under a folder (inside a root) to the index; off unless enabled."""
        if not self.config.allow_indexing:
            raise ToolError("Indexing is disabled for this tool (the operator can enable it).")
        with self.slot():
            resolved = self._resolve(folder, "folder")
            if not resolved.is_dir():
                raise ToolError(f"Not a folder: {Path(folder).name}.")
            from lensgraph.pipeline.images import iter_image_files

            inside: dict[Path, None] = {}  # real paths, once each: the indexer then opens no link
            outside: list[Path] = []  # a file link may lead out of the roots: check where each one lands
            for path in iter_image_files(resolved):
                try:
                    real: Path | None = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    real = None
                if real is not None and self._inside(real):
                    inside[real] = None
                else:
                    outside.append(path)
            report = self.searcher.add_files(list(inside))
            skipped = [(str(p), "outside the folders this tool may read") for p in outside] + report.skipped
            return {"added": report.added, "unchanged": report.unchanged,
                    "skipped": [{"file": Path(p).name, "reason": self.public_text(r)} for p, r in skipped],
                    "images": self.searcher.index.count()}

    def index_info(self) -> dict[str, Any]:
        """What the index holds."""
        with self.slot():
            info = self.searcher.index.info()
            return {"name": info.name, "images": info.images, "captions": info.captions, "clip": info.clip,
                    "caption_encoder": info.text_encoder, "stages": self.context.stages,
                    "indexing_enabled": self.config.allow_indexing}
