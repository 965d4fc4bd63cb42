"""Model calls: the backend protocol, and the one place every call goes through.

A backend implements `generate(Request) -> Reply` and nothing else. `Model` wraps any backend
with the call cache, retries with backoff on transient errors, a per-backend concurrency limit,
and counters; stages call `Model.complete` (text, or images + text).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, Sequence

from lensgraph.pipeline.errors import LensgraphError

log = logging.getLogger("lensgraph")


class ModelError(LensgraphError):
    """A model call failed for good (after retries, or a request the backend rejects)."""


MAX_RETRY_AFTER = 60.0  # seconds: a longer Retry-After is an outage, not a rate limit


class TransientError(Exception):
    """Raised by backends for errors worth retrying: rate limits, 5xx, timeouts, lost connections.
    `retry_after`: the seconds the server asked to wait (HTTP Retry-After), when it said."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


IMAGE_MAX_SIDE = 1024  # pixels: the longest side a model gets by default (settings.image_max_side)
# What OpenAI-compatible servers take as they are, by Pillow format; anything else is re-encoded.
PASS_THROUGH = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
_PLAIN_MODES = frozenset({"RGB", "RGBA", "L", "LA", "P"})  # not CMYK, 16 bit or float: servers misread those
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


@dataclass(frozen=True)
class ImageInput:
    """An image for a model: encoded bytes and an identity (sha256 of the original bytes, the call
    cache key and the index id, whatever a model is sent).

    Models get the image fitted to what they need: `pil(max_side)` for local models,
    `for_model(max_side)` for servers. It is decoded once per instance and each prepared form is
    kept on the instance, so asking several questions about one image costs one decode."""

    id: str
    data: bytes = field(repr=False)
    mime: str = "image/jpeg"  # of `data`; what goes to a server is `for_model`'s
    sources: tuple[str, ...] = ()  # a composite's source image ids, left to right
    _prepared: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: Any = field(default_factory=threading.RLock, init=False, repr=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes, mime: str | None = None) -> ImageInput:
        return cls(hashlib.sha256(data).hexdigest(), data, mime or _sniff_mime(data))

    @classmethod
    def from_path(cls, path: str | Path) -> ImageInput:
        from lensgraph.pipeline.images import read_file

        return cls.from_bytes(read_file(path))

    @classmethod
    def from_pil(cls, image: Any, sources: tuple[str, ...] = ()) -> ImageInput:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=92)
        data = buf.getvalue()
        # keyed by content: a composite's layout (sizes, labels) is part of what the model sees
        return cls(hashlib.sha256(data).hexdigest(), data, "image/jpeg", sources)

    def pil(self, max_side: int | None = None) -> Any:
        """Upright RGB, scaled down to at most `max_side` pixels on its longest side when given.
        Cached and shared between callers: do not modify it in place."""
        from lensgraph.pipeline.images import to_rgb

        return self._cached(("rgb", max_side), lambda: _fit(to_rgb(self._upright()), max_side))

    def for_model(self, max_side: int = IMAGE_MAX_SIDE) -> tuple[str, bytes]:
        """(MIME type, bytes) to send to a model server: the original bytes when a server takes them
        as they are, else re-encoded at most `max_side` pixels on the longest side: PNG for images
        with transparency or a palette, JPEG for photos."""
        return self._cached(("encoded", max_side), lambda: self._as_is(max_side) or _encode(self._upright(), max_side))

    def _as_is(self, max_side: int) -> tuple[str, bytes] | None:
        """The original bytes and their real MIME type, if they are a still JPEG, PNG, WEBP or GIF
        within `max_side`, already upright, in a plain mode. Reads the header only."""
        import warnings

        from PIL import Image

        if _sniff_mime(self.data) not in PASS_THROUGH.values():
            return None  # BMP, TIFF, PPM...: not worth opening
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # bombs, corrupt EXIF: the full decode, if any, says so
                with Image.open(io.BytesIO(self.data)) as img:
                    mime = PASS_THROUGH.get(img.format or "")
                    fits = max(img.size) <= max_side and img.mode in _PLAIN_MODES
                    still = not getattr(img, "is_animated", False)
                    upright = _orientation(img.info.get("exif")) == 1  # servers may ignore EXIF orientation
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
            return None  # the full decode says what is wrong
        return (mime, self.data) if mime and fits and still and upright else None

    def _upright(self) -> Any:
        """The decoded image, EXIF orientation applied, in its own mode (alpha and palette kept)."""
        from lensgraph.pipeline.images import decode_upright

        return self._cached("upright", lambda: decode_upright(self.data, self.id[:12]))

    def _cached(self, key: Any, make: Any) -> Any:
        with self._lock:  # re-entrant: a prepared form is made from the cached decode
            if key not in self._prepared:
                self._prepared[key] = make()
            return self._prepared[key]


def _orientation(exif: bytes | None) -> int:
    """The EXIF orientation tag (1: upright, 0: unreadable). From the header's EXIF block only:
    Pillow's getexif() decodes a whole PNG to look for a trailing eXIf chunk."""
    if not exif:
        return 1
    import struct

    from PIL import Image

    tags = Image.Exif()
    try:
        tags.load(exif)
    except (SyntaxError, ValueError, OSError, struct.error):
        return 0
    return tags.get(0x0112, 1)


def _fit(img: Any, max_side: int | None) -> Any:
    """`img` scaled down (never up) so that its longest side is at most `max_side` pixels."""
    from PIL import Image

    if max_side is None or max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _has_alpha(img: Any) -> bool:
    """Whether any pixel is see-through (an all-opaque alpha channel is just a photo)."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode not in _ALPHA_MODES:
        return False
    return img.getchannel("A").getextrema()[0] < 255


def _encode(img: Any, max_side: int) -> tuple[str, bytes]:
    """Re-encode for a server: PNG keeps transparency and the hard edges of palette images
    (diagrams, screenshots); JPEG for everything else."""
    from lensgraph.pipeline.images import to_rgb

    if _has_alpha(img):
        img, fmt = img.convert("RGBA"), "PNG"
    elif img.mode in ("P", "1"):
        img, fmt = img.convert("RGB"), "PNG"
    else:
        img, fmt = to_rgb(img), "JPEG"
    buf = io.BytesIO()
    _fit(img, max_side).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return f"image/{fmt.lower()}", buf.getvalue()


# Netpbm's magic digit (ASCII, binary): P1/P4 bitmap, P2/P5 greymap (PGM), P3/P6 pixmap (PPM)
_NETPBM = {b"1": "bitmap", b"4": "bitmap", b"2": "graymap", b"5": "graymap", b"3": "pixmap", b"6": "pixmap"}


def _sniff_mime(data: bytes) -> str:
    """The MIME type of encoded image bytes, from their magic numbers."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # little/big endian, classic/BigTIFF
        return "image/tiff"
    if data[:2] == b"BM":
        return "image/bmp"
    if data[:1] == b"P" and data[1:2] in _NETPBM and data[2:3].isspace():
        return f"image/x-portable-{_NETPBM[data[1:2]]}"
    return "application/octet-stream"


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
    stage: str = ""  # the pipeline stage asking, for the call log; not part of the cache key

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
    usage: Usage | None = None
    """Tokens the server reports for this call (None from the call cache: nothing was served)."""


@dataclass(frozen=True)
class Usage:
    """Tokens of one served call, as OpenAI's `usage` reports them (llama.cpp's and vLLM's servers too)."""

    prompt: int = 0
    completion: int = 0
    cached: int | None = None
    """Prompt tokens the server took from its prompt cache, where it reports them."""


class Backend(Protocol):
    kind: str  # "openai", "hf", "caption"
    model_id: str
    identity: str  # what distinguishes this backend in cache keys (kind, model, server)
    max_concurrency: int
    cacheable: bool

    def generate(self, request: Request) -> Reply: ...


CAPTION_TOKENS = 120


def caption_image(captioner: Model, prompt: str, image: ImageInput, stage: str = "caption") -> Reply:
    """The one captioning call, wherever an image is described (a reference at query time, a gallery
    at index time, an image a tool was given): the reply, its text on one line."""
    reply = captioner.complete(prompt, [image], max_tokens=CAPTION_TOKENS, stage=stage)
    return replace(reply, text=" ".join(reply.text.split()))


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
        self._identity: str | None = None

    def served(self) -> list[str] | None:
        """The model ids the backend's server says it serves (OpenAI-compatible servers), else None."""
        method = getattr(self.backend, "served", None)
        return method() if method else None

    @property
    def identity(self) -> str:
        """What the cache keys this model's replies by: the backend's identity and, for a server that
        ignores the requested name (llama.cpp, vLLM without --served-model-name), what `GET /models`
        says it serves, so other weights behind the same URL and name never get these replies."""
        if self._identity is None:
            identity = self.backend.identity
            ids = self.served()
            if ids and self.backend.model_id not in ids:
                identity += "|serves=" + ",".join(sorted(ids)[:8])
            side = getattr(self.backend, "image_max_side", None)
            if side and side != IMAGE_MAX_SIDE:  # other pixels are sent: other replies
                identity += f"|max_side={side}"
            self._identity = identity
        return self._identity

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
        stage: str = "",
    ) -> Reply:
        request = Request(prompt, tuple(images), system, max_tokens, temperature, json or schema is not None, schema,
                          logprobs, stage)
        if self.cache is None:
            return self._call(request)
        key = self.cache.key(self.identity, request)
        hit = self.cache.get(key)
        if hit is not None:
            with self._lock:
                self.stats.cache_hits += 1
            self.cache.log(stage, self.identity, key, "cached", 0.0)
            return hit
        try:
            reply = self._call(request)
        except ModelError:
            self.cache.log(stage, self.identity, key, "failed", 0.0)
            raise
        if reply.finish_reason != "error":
            self.cache.put(key, self.identity, reply)
        self.cache.log(stage, self.identity, key, "served", reply.seconds)
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
                return Reply(reply.text, reply.finish_reason, reply.cached, elapsed, reply.logprobs, reply.usage)
            except TransientError as e:
                if attempt == self.retries:
                    with self._lock:
                        self.stats.failures += 1
                    raise ModelError(f"{self.spec}: {e} (gave up after {self.retries + 1} attempts)") from None
                delay = self.backoff * 2**attempt * (1 + random.random() / 2)
                if e.retry_after is not None:  # the server said how long: wait that (capped), not less
                    delay = max(delay, min(e.retry_after, MAX_RETRY_AFTER))
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
        # 3: the call log, append-only: one row per request, served, from the cache or failed
        "CREATE TABLE IF NOT EXISTS calls (time REAL, stage TEXT, backend TEXT, key TEXT, outcome TEXT, seconds REAL)",
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

    def log(self, stage: str, identity: str, key: str, outcome: str, seconds: float) -> None:
        """Append one request to the call log ("served", "cached" or "failed")."""
        with self._lock:
            self._db.execute("INSERT INTO calls (time, stage, backend, key, outcome, seconds) VALUES (?, ?, ?, ?, ?, ?)",
                             (time.time(), stage, identity, key, outcome, round(seconds, 4)))

    def call_counts(self, since: float = 0.0) -> dict[str, dict[str, float]]:
        """Per stage: requests served, cached and failed, and seconds served, since a time (epoch)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT stage, outcome, COUNT(*), SUM(seconds) FROM calls WHERE time >= ? GROUP BY stage, outcome", (since,)
            ).fetchall()
        out: dict[str, dict[str, float]] = {}
        for stage, outcome, n, seconds in rows:
            entry = out.setdefault(stage or "", {"served": 0, "cached": 0, "failed": 0, "seconds": 0.0})
            entry[outcome] = n
            if outcome == "served":
                entry["seconds"] = round(float(seconds or 0.0), 3)
        return out
