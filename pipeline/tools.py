"""lensgraph as a tool for agents: the operations, with the checks an untrusted caller needs.

Adapters (LangChain, OpenAI function calling, MCP) all call `ImageTools`, so every one of them
gets the same limits:
- image paths are resolved (symlinks and `..` included) and must lie under a configured root;
- reference images may also come as data URLs or bytes, up to a size cap;
- k, text length and concurrent calls are bounded; indexing is off unless enabled;
- results, errors and logs carry no secrets (API keys, credentials inside URLs).
A refusal raises `ToolError` with a message meant for the calling model.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import LensgraphError
from pipeline.settings import Settings

DATA_URL = re.compile(r"^data:(image/[\w.+-]+)?(;base64)?,(.*)$", re.DOTALL)


class ToolError(LensgraphError):
    """A refused or failed tool call; the message is safe to show the calling model."""


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
        self._context: Any = None
        self._context_lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def context(self) -> Any:
        """The retrieval graph's context, built on first use (models and index load once)."""
        with self._context_lock:
            if self._context is None:
                from pipeline.searcher import Searcher

                self._context = Searcher.open(self.settings).context
            return self._context

    @contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            raise ToolError(f"Too many concurrent calls (limit {self.config.max_concurrent}); try again shortly.")
        try:
            yield
        except ToolError:
            raise
        except LensgraphError as e:
            raise ToolError(redact(str(e), self.settings)) from None
        finally:
            self._slots.release()

    def _check_text(self, text: str, what: str = "query") -> str:
        if not isinstance(text, str) or not text.strip():
            raise ToolError(f"The {what} is empty.")
        if len(text) > self.config.max_text_chars:
            raise ToolError(f"The {what} is {len(text)} characters; the limit is {self.config.max_text_chars}.")
        return text.strip()

    def _check_k(self, k: int) -> int:
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= self.config.max_k:
            raise ToolError(f"k must be a whole number from 1 to {self.config.max_k}.")
        return k

    def allowed_path(self, path: str | os.PathLike) -> Path:
        """The resolved path, if it is an existing file under a root; else a ToolError."""
        try:
            resolved = Path(path).expanduser().resolve(strict=True)
        except (OSError, RuntimeError):
            raise ToolError(f"No such image file: {Path(path).name}.") from None
        if not resolved.is_file():
            raise ToolError(f"Not a file: {Path(path).name}.")
        if not any(resolved.is_relative_to(root) for root in self.config.roots):
            raise ToolError("That path is outside the folders this tool may read.")
        if resolved.stat().st_size > self.config.max_image_bytes:
            raise ToolError(f"The image is larger than {self.config.max_image_bytes:,} bytes.")
        return resolved

    def image_bytes(self, image: str | bytes) -> bytes:
        """Bytes of an image given as a path under a root, a data URL, or raw bytes (size-capped)."""
        if isinstance(image, (bytes, bytearray)):
            data = bytes(image)
        elif isinstance(image, str) and image.startswith("data:"):
            match = DATA_URL.match(image)
            if not match or not match.group(2):
                raise ToolError("A data URL must be base64: data:image/...;base64,....")
            if len(match.group(3)) > self.config.max_image_bytes * 4 // 3 + 4:
                raise ToolError(f"The image is larger than {self.config.max_image_bytes:,} bytes.")
            try:
                data = base64.b64decode(match.group(3), validate=True)
            except (binascii.Error, ValueError):
                raise ToolError("The data URL is not valid base64.") from None
        elif isinstance(image, str):
            return self.allowed_path(image).read_bytes()
        else:
            raise ToolError("An image is a file path, a data URL, or bytes.")
        if len(data) > self.config.max_image_bytes:
            raise ToolError(f"The image is larger than {self.config.max_image_bytes:,} bytes.")
        return data

    @contextmanager
    def _reference_file(self, image: str | bytes | None) -> Iterator[str | None]:
        """A file path for the graph: the checked path itself, or a private temp copy of bytes."""
        if image is None:
            yield None
            return
        if isinstance(image, str) and not image.startswith("data:"):
            yield str(self.allowed_path(image))
            return
        data = self.image_bytes(image)
        from pipeline.images import decode_image

        decode_image(data, "<reference>", self.settings.max_pixels)  # refuse non-images before any work
        with tempfile.TemporaryDirectory(prefix="lensgraph-ref-") as tmp:
            path = Path(tmp) / "reference.img"
            path.write_bytes(data)
            yield str(path)

    # -- the tools -------------------------------------------------------------------------------

    def search_images(self, query: str, reference_image: str | bytes | None = None, k: int = 10,
                      threshold: float | None = None) -> dict[str, Any]:
        """Find gallery images for a description, or for a reference image plus a change to it.
        With a threshold (0-1), only results whose evidence reaches it are returned."""
        query, k = self._check_text(query), self._check_k(k)
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
            raise ToolError("threshold is a number between 0 and 1.")
        from graphs.runner import run_query

        with self._slot(), self._reference_file(reference_image) as reference:
            ctx = self.context
            state = run_query(ctx if k <= ctx.k else ctx.searcher.context_for(k), query, reference)
            results = [{**asdict(r), "relevance": r.relevance} for r in ctx.searcher.results_of(state, k, threshold)]
            return {
                "query": query,
                "reference_caption": state.get("caption") if reference else None,
                "descriptions": state.get("descriptions", []),
                "stages": [t["stage"] for t in state.get("trace", [])],
                "warnings": [redact(w, self.settings) for t in state.get("trace", []) for w in t.get("warnings", [])],
                "results": results,
            }

    def describe_image(self, image: str | bytes) -> dict[str, Any]:
        """The stored caption of an image, or a new one from the captioner."""
        with self._slot():
            data = self.image_bytes(image)
            from pipeline.models import ImageInput

            picture = ImageInput.from_bytes(data)
            ctx = self.context
            stored = ctx.searcher.index.metadata([picture.id]).get(picture.id, {}).get("caption")
            if stored:
                return {"id": picture.id, "caption": stored, "source": "index"}
            if ctx.models.captioner is None:
                raise ToolError("This image has no stored caption and no captioner (vision model) is configured.")
            picture.pil()  # a non-image fails here with a clear reason
            reply = ctx.models.captioner.complete(ctx.prompts["caption"].render(), [picture], max_tokens=120)
            return {"id": picture.id, "caption": " ".join(reply.text.split()), "source": ctx.models.captioner.spec}

    def index_images(self, folder: str) -> dict[str, Any]:
        """Add the images under a folder (inside a root) to the index; off unless enabled."""
        if not self.config.allow_indexing:
            raise ToolError("Indexing is disabled for this tool (the operator can enable it).")
        with self._slot():
            try:
                resolved = Path(folder).expanduser().resolve(strict=True)
            except (OSError, RuntimeError):
                raise ToolError("No such folder.") from None
            if not resolved.is_dir() or not any(resolved.is_relative_to(r) for r in self.config.roots):
                raise ToolError("That folder is outside the folders this tool may read.")
            from pipeline.images import iter_image_files

            inside, outside = [], []  # file symlinks are followed when indexing: check where each one lands
            for path in iter_image_files(resolved):
                try:
                    real: Path | None = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    real = None
                ok = real is not None and any(real.is_relative_to(r) for r in self.config.roots)
                (inside if ok else outside).append(path)
            report = self.context.searcher.add_files(inside)
            skipped = [(str(p), "outside the folders this tool may read") for p in outside] + report.skipped
            return {"added": report.added, "unchanged": report.unchanged,
                    "skipped": [{"file": Path(p).name, "reason": r} for p, r in skipped],
                    "images": self.context.searcher.index.count()}

    def index_info(self) -> dict[str, Any]:
        """What the index holds."""
        with self._slot():
            info = self.context.searcher.index.info()
            return {"name": info.name, "images": info.images, "captions": info.captions, "clip": info.clip,
                    "caption_encoder": info.text_encoder, "stages": self.context.stages,
                    "indexing_enabled": self.config.allow_indexing}


def redact(text: str, settings: Settings | None = None) -> str:
    """Text without secrets: the API key, credentials in URLs, bearer tokens."""
    text = re.sub(r"(https?://)[^/\s:@]+(:[^/\s@]*)?@", r"\1", text)
    text = re.sub(r"(?i)(bearer\s+|api[_-]?key[=:\s]+)\S+", r"\1[redacted]", text)
    text = re.sub(r"sk-[A-Za-z0-9_-]{8,}", "[redacted]", text)
    key = settings.openai_api_key if settings is not None else None
    secret = key.get_secret_value() if hasattr(key, "get_secret_value") else key
    if secret:
        text = text.replace(str(secret), "[redacted]")
    return text
