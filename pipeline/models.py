"""Model calls: two small protocols, and the one place every call goes through.

A backend implements `generate(Request) -> Reply` and nothing else. `Model` wraps any backend
with the call cache, retries with backoff on transient errors, a per-backend concurrency limit,
and counters. Stages talk to `ChatModel` (text) and `VisionModel` (images + text); `Model`
implements both.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from pipeline.errors import LensgraphError

log = logging.getLogger("lensgraph")


class ModelError(LensgraphError):
    """A model call failed for good (after retries, or a request the backend rejects)."""


class TransientError(Exception):
    """Raised by backends for errors worth retrying: rate limits, 5xx, timeouts, lost connections."""


@dataclass(frozen=True)
class ImageInput:
    """An image for a model: encoded bytes and an identity (sha256 of the bytes, or of its sources)."""

    id: str
    data: bytes = field(repr=False)
    mime: str = "image/jpeg"
    sources: tuple[str, ...] = ()  # a composite's source image ids, left to right

    @classmethod
    def from_bytes(cls, data: bytes, mime: str | None = None) -> ImageInput:
        return cls(hashlib.sha256(data).hexdigest(), data, mime or _sniff_mime(data))

    @classmethod
    def from_path(cls, path: str | Path) -> ImageInput:
        from pipeline.images import read_file

        return cls.from_bytes(read_file(path))

    @classmethod
    def from_pil(cls, image: Any, sources: tuple[str, ...] = ()) -> ImageInput:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=92)
        data = buf.getvalue()
        identity = hashlib.sha256("|".join(sources).encode()).hexdigest() if sources else hashlib.sha256(data).hexdigest()
        return cls(identity, data, "image/jpeg", sources)

    def pil(self) -> Any:
        from pipeline.images import decode_image

        return decode_image(self.data, self.id[:12])


def _sniff_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:3] == b"GIF":
        return "image/gif"
    return "image/jpeg"


@dataclass(frozen=True)
class Request:
    prompt: str
    images: tuple[ImageInput, ...] = ()
    system: str | None = None
    max_tokens: int = 512
    temperature: float = 0.0
    json: bool = False  # ask for one JSON object (the backend's JSON mode where it has one)
    schema: dict[str, Any] | None = None  # constrain the JSON to this JSON Schema where the server can
    logprobs: bool = False  # return the most likely alternatives of the first generated tokens

    def cache_fields(self) -> dict[str, Any]:
        fields = {
            "prompt": self.prompt,
            "images": [im.id for im in self.images],
            "system": self.system,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "json": self.json,
        }
        # Only present when set, so the keys of plain calls stay what they were.
        if self.schema is not None:
            fields["schema"] = self.schema
        if self.logprobs:
            fields["logprobs"] = True
        return fields


TokenAlternatives = dict[str, float]  # token text -> log probability, at one position of a reply
LOGPROB_POSITIONS = 4  # positions kept: enough to find a one-word answer after a space or a quote


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str = "stop"  # "length" means max_tokens cut the reply
    cached: bool = False
    seconds: float = 0.0
    logprobs: tuple[TokenAlternatives, ...] | None = None
    """The top alternatives at each of the first generated positions, when asked and available."""


class Backend(Protocol):
    kind: str  # "openai", "hf", "caption"
    model_id: str
    identity: str  # what distinguishes this backend in cache keys (kind, model, server)
    max_concurrency: int
    cacheable: bool

    def generate(self, request: Request) -> Reply: ...


class ChatModel(Protocol):
    spec: str

    def complete(
        self, prompt: str, *, system: str | None = None, max_tokens: int = 512, temperature: float = 0.0,
        json: bool = False, schema: dict[str, Any] | None = None, logprobs: bool = False,
    ) -> Reply: ...


class VisionModel(Protocol):
    spec: str

    def complete(
        self,
        prompt: str,
        images: Sequence[ImageInput] = (),
        *,
        system: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        json: bool = False,
        schema: dict[str, Any] | None = None,
        logprobs: bool = False,
    ) -> Reply: ...


@dataclass
class CallStats:
    calls: int = 0  # requests that reached the backend
    cache_hits: int = 0
    failures: int = 0
    seconds: float = 0.0


class Model:
    """A backend behind the call cache, retries, a concurrency limit and counters."""

    def __init__(
        self,
        spec: str,
        backend: Backend,
        cache: CallCache | None = None,
        retries: int = 3,
        backoff: float = 0.5,
    ):
        self.spec = spec
        self.backend = backend
        self.cache = cache if backend.cacheable else None
        self.retries = retries
        self.backoff = backoff
        self.stats = CallStats()
        self._limit = threading.BoundedSemaphore(max(1, backend.max_concurrency))
        self._lock = threading.Lock()

    def complete(
        self,
        prompt: str,
        images: Sequence[ImageInput] = (),
        *,
        system: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        json: bool = False,
        schema: dict[str, Any] | None = None,
        logprobs: bool = False,
    ) -> Reply:
        request = Request(prompt, tuple(images), system, max_tokens, temperature, json or schema is not None, schema, logprobs)
        key = self.cache.key(self.backend.identity, request) if self.cache is not None else None
        if key:
            hit = self.cache.get(key)
            if hit is not None:
                with self._lock:
                    self.stats.cache_hits += 1
                return hit
        reply = self._call(request)
        if key and reply.finish_reason != "error":
            self.cache.put(key, self.backend.identity, reply)
        return reply

    def _call(self, request: Request) -> Reply:
        for attempt in range(self.retries + 1):
            started = time.perf_counter()
            try:
                with self._limit:
                    reply = self.backend.generate(request)
                elapsed = time.perf_counter() - started
                with self._lock:
                    self.stats.calls += 1
                    self.stats.seconds += elapsed
                return Reply(reply.text, reply.finish_reason, reply.cached, elapsed, reply.logprobs)
            except TransientError as e:
                if attempt == self.retries:
                    with self._lock:
                        self.stats.failures += 1
                    raise ModelError(f"{self.spec}: {e} (gave up after {self.retries + 1} attempts)") from None
                delay = self.backoff * 2**attempt * (1 + random.random() / 2)
                log.warning("%s: %s; retrying in %.1fs", self.spec, e, delay)
                time.sleep(delay)
            except ModelError:
                with self._lock:
                    self.stats.failures += 1
                raise
        raise AssertionError("unreachable")


class CallCache:
    """Model replies in SQLite, keyed by a hash of everything that affects the output.

    The schema changes only by numbered migrations (`MIGRATIONS`, tracked in `PRAGMA user_version`).
    """

    MIGRATIONS = (
        "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, backend TEXT, text TEXT, finish_reason TEXT, created REAL)",
        "ALTER TABLE replies ADD COLUMN logprobs TEXT",  # 2: first-token alternatives (JSON)
    )

    def __init__(self, path: str | Path):
        import sqlite3

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._migrate()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version == 0 and self._db.execute("SELECT name FROM sqlite_master WHERE name = 'replies'").fetchone():
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(replies)")}
            version = 2 if "logprobs" in columns else 1  # a cache written before versions were recorded
        for number, statement in enumerate(self.MIGRATIONS[version:], version + 1):
            self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {number}")

    @staticmethod
    def key(identity: str, request: Request) -> str:
        blob = json.dumps({"backend": identity, **request.cache_fields()}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> Reply | None:
        with self._lock:
            row = self._db.execute("SELECT text, finish_reason, logprobs FROM replies WHERE key = ?", (key,)).fetchone()
        if not row:
            return None
        logprobs = tuple(json.loads(row[2])) if row[2] else None
        return Reply(row[0], row[1], cached=True, logprobs=logprobs)

    def put(self, key: str, identity: str, reply: Reply) -> None:
        logprobs = json.dumps(list(reply.logprobs)) if reply.logprobs is not None else None
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies (key, backend, text, finish_reason, created, logprobs) VALUES (?, ?, ?, ?, ?, ?)",
                (key, identity, reply.text, reply.finish_reason, time.time(), logprobs),
            )

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])
