"""Adding a folder of photos to a gallery index: incremental, resumable, streaming.

Files whose path, size and mtime match the index are not read again. The rest are read, hashed,
decoded and preprocessed by worker threads while the model embeds the previous batch; each batch
is written to Chroma as soon as it is embedded, so a killed run loses at most one batch and the
next run picks up where it stopped (ids are content hashes: no duplicates).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from lensgraph.pipeline.models.encoders import ClipEncoder, TextEncoder, default_batch_size
from lensgraph.pipeline.errors import ImageLoadError, LensgraphError
from lensgraph.pipeline.images import check_unchanged, iter_image_files
from lensgraph.pipeline.store.index import GalleryIndex
from lensgraph.pipeline.ingest.prepare import PreparedFile, prepare_file

if TYPE_CHECKING:
    from lensgraph.pipeline.ingest.ray_job import RayJob

log = logging.getLogger("lensgraph")

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[int, int], None]  # (files done, files to do)


@dataclass
class IndexReport:
    folder: str
    files: int = 0
    added: int = 0
    unchanged: int = 0
    moved: int = 0
    duplicates: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    missing: int = 0  # indexed files no longer on disk
    pruned: int = 0
    captions_added: int = 0
    captions_unchanged: int = 0
    captions_unmatched: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else 0.0


def default_workers(device: str) -> int:
    """Decoding threads: on the CPU they share the cores with the model, and 2 measured best on 2
    cores (bench/index_speed.py); a GPU embeds ~10x faster than a core decodes, so it gets one
    thread per core, up to 8 (PIL and torchvision release the GIL while they decode and resize)."""
    if device.split(":", 1)[0] == "cpu":
        return 2
    return max(2, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2))


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int, window: int) -> Iterator[R]:
    """Like executor.map, in order, but never more than `window` results in flight (memory stays flat)."""
    if workers <= 0:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="lensgraph-decode") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def index_folder(
    index: GalleryIndex,
    folder: str | os.PathLike,
    clip: ClipEncoder | Callable[[], ClipEncoder],
    *,
    prune: bool = False,
    **options: Any,
) -> IndexReport:
    """Embed every new or changed image under `folder` into `index`; with prune, drop indexed
    images from this folder whose files are gone."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise LensgraphError(f"{root} is not a folder. Give the folder of images to index.")
    root = root.resolve()
    return index_files(index, iter_image_files(root), clip, root=root, prune=prune, **options)


def index_files(
    index: GalleryIndex,
    files: Iterable[str | os.PathLike],
    clip: ClipEncoder | Callable[[], ClipEncoder],
    *,
    root: Path | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    max_pixels: int = 100_000_000,
    prune: bool = False,
    progress: Progress | None = None,
    ray: RayJob | None = None,
) -> IndexReport:
    """Embed the given image files (a benchmark's gallery, say) that are new or changed.

    `root`, when given, is the folder the files were listed from: indexed images under it whose
    files are gone are counted as missing (and removed with prune). `clip` may be a function that
    loads the encoder: it is called only when something needs embedding (a re-run stays light).
    `batch_size` and `workers` left at None are chosen for the encoder's device. With `ray`, the
    files are read, decoded and embedded by a Ray Data job (pipeline/ingest/ray_job.py) and only the
    writes happen here."""
    started = time.perf_counter()
    report = IndexReport(folder=str(root or ""))
    known = index.all_metadata()
    todo, on_disk = _scan(files, known, report)
    if ray is not None:
        from lensgraph.pipeline.ingest.ray_job import embed_with_ray

        batch_size = batch_size or ray.batch_size
        results: Iterable[PreparedFile | ImageLoadError] = embed_with_ray(todo, set(known), ray, batch_size, max_pixels)
        embed: Callable[[list[PreparedFile]], Any] = lambda batch: np.stack([p.vector for p in batch])
    else:
        if todo and not isinstance(clip, ClipEncoder):
            clip = clip()
        device = clip.device if isinstance(clip, ClipEncoder) else "cpu"  # no encoder is loaded when nothing is new
        batch_size = batch_size or default_batch_size(device)
        workers = default_workers(device) if workers is None else workers
        prepare = functools.partial(prepare_file, known=known, preprocess=getattr(clip, "preprocess", None),
                                    max_pixels=max_pixels)
        # Two batches decoded ahead: the next one is ready when the model finishes this one.
        results = bounded_map(prepare, todo, workers, window=max(2 * batch_size, 4 * workers))
        embed = lambda batch: _encode_tensors(clip, batch)  # type: ignore[arg-type]

    writer = _Writer(index, report, known, embed, batch_size)
    if progress:
        progress(0, len(todo))
    for done, result in enumerate(results, 1):
        writer.take(result)
        if progress:
            progress(done, len(todo))
    writer.flush()
    _find_missing(index, known, on_disk, writer.seen, root, prune, report)
    report.seconds = time.perf_counter() - started
    return report


def _scan(files: Iterable[str | os.PathLike], known: dict[str, dict[str, Any]],
          report: IndexReport) -> tuple[list[tuple[Path, os.stat_result]], set[str]]:
    """The files to read (new, or changed by size or mtime), and every path seen on disk."""
    by_path = {m.get("path"): m for m in known.values()}
    todo: list[tuple[Path, os.stat_result]] = []
    on_disk: set[str] = set()
    for path in map(lambda f: Path(os.path.abspath(f)), files):
        report.files += 1
        on_disk.add(str(path))
        try:
            st = path.stat()
        except OSError as e:
            report.skipped.append((str(path), f"unreadable: {e.strerror or e}"))
            continue
        meta = by_path.get(str(path))
        if meta and meta.get("size") == st.st_size and meta.get("mtime_ns") == st.st_mtime_ns:
            report.unchanged += 1
        else:
            todo.append((path, st))
    return todo, on_disk


def _encode_tensors(clip: ClipEncoder, batch: list[PreparedFile]) -> Any:
    import torch

    return clip.encode_image_tensors(torch.stack([p.tensor for p in batch]))


class _Writer:
    """What to do with each prepared file: skip it, record a move, or embed (in batches) and write it.
    Each batch is written as soon as it is embedded: a killed run loses at most one batch."""

    def __init__(self, index: GalleryIndex, report: IndexReport, known: dict[str, dict[str, Any]],
                 embed: Callable[[list[PreparedFile]], Any], batch_size: int):
        self.index, self.report, self.known, self.embed, self.batch_size = index, report, known, embed, batch_size
        self.seen: set[str] = set()
        self.batch: list[PreparedFile] = []
        self.moves: list[tuple[str, dict[str, Any]]] = []

    def take(self, result: PreparedFile | ImageLoadError) -> None:
        report = self.report
        if isinstance(result, ImageLoadError):
            report.skipped.append((result.path, result.reason))
            log.warning("skipped %s: %s", result.path, result.reason)
        elif result.id in self.seen:
            report.duplicates += 1
        elif result.id in self.known:  # content already indexed: moved, touched or a duplicate file
            self.seen.add(result.id)
            old = self.known[result.id]
            if old.get("path") == result.path or not Path(str(old.get("path"))).exists():
                report.moved += old.get("path") != result.path
                self.moves.append((result.id, {**old, "path": result.path, "size": result.size, "mtime_ns": result.mtime_ns}))
            else:
                report.duplicates += 1
        else:
            self.seen.add(result.id)
            self.batch.append(result)
            if len(self.batch) >= self.batch_size:
                self.flush()

    def flush(self) -> None:
        """Write what is pending: the embedded batch, and the moved files' new paths (one write for all)."""
        if self.batch:
            batch = self.batch
            self.index.upsert_images(
                [p.id for p in batch], self.embed(batch),
                [{"path": p.path, "width": p.width, "height": p.height, "size": p.size, "mtime_ns": p.mtime_ns}
                 for p in batch],
            )
            self.report.added += len(batch)
            log.info("indexed batch of %d (%d added so far)", len(batch), self.report.added)
            self.batch = []
        if self.moves:
            self.index.update_metadata([i for i, _ in self.moves], [m for _, m in self.moves])
            self.moves = []


def _find_missing(index: GalleryIndex, known: dict[str, dict[str, Any]], on_disk: set[str], seen: set[str],
                  root: Path | None, prune: bool, report: IndexReport) -> None:
    """Indexed images from this folder whose file is gone (and whose content did not turn up elsewhere)."""
    prefix = str(root) + os.sep if root else None
    gone = [
        i for i, m in known.items()
        if prefix and str(m.get("path", "")).startswith(prefix) and m["path"] not in on_disk and i not in seen
    ]
    report.missing = len(gone)
    if prune and gone:
        index.delete(gone)
        report.pruned = len(gone)


# -- captions ---------------------------------------------------------------------------------


def store_captions(
    index: GalleryIndex, known: dict[str, dict[str, Any]], captions: dict[str, str], text_encoder: TextEncoder
) -> int:
    """Embed captions (image id -> text) into the caption channel and the images' metadata."""
    ids = list(captions)
    texts = [captions[i] for i in ids]
    index.upsert_captions(ids, text_encoder.encode_texts(texts), texts)
    index.update_metadata(ids, [{**known[i], "caption": captions[i]} for i in ids])
    return len(ids)


def read_captions_jsonl(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read `{"id" | "path": ..., "caption": ...}` lines; a bad line is an error naming its number."""
    path = Path(path)
    if not path.is_file():
        raise LensgraphError(f"Captions file {path} does not exist.")
    entries = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LensgraphError(f"{path}:{number}: not valid JSON ({e.msg}).") from None
            if not isinstance(row, dict) or not isinstance(row.get("caption"), str) or not (
                isinstance(row.get("id"), str) or isinstance(row.get("path"), str)
            ):
                raise LensgraphError(
                    f'{path}:{number}: expected {{"id" or "path": "...", "caption": "..."}}, got {line.strip()[:120]}'
                )
            entries.append(row)
    return entries


def import_captions(
    index: GalleryIndex,
    entries: list[dict[str, str]],
    text_encoder: TextEncoder,
    text_encoder_spec: str,
    root: str | os.PathLike | None = None,
    batch_size: int = 256,
) -> IndexReport:
    """Embed captions into the index's caption channel.

    An entry names its image by `id` (the content hash, or the file name without extension, as
    benchmark caption files do) or by `path` (absolute, or relative to `root`). Captions already
    stored with the same text are not embedded again.
    """
    report = IndexReport(folder=str(root or ""))
    started = time.perf_counter()
    known = index.all_metadata()
    by_path = {str(m.get("path")): i for i, m in known.items()}
    stems: dict[str, list[str]] = {}
    for i, m in known.items():
        stems.setdefault(Path(str(m.get("path"))).stem, []).append(i)

    def resolve(entry: dict[str, str]) -> str | None:
        if "id" in entry:
            key = entry["id"]
            if key in known:
                return key
            matches = stems.get(key, [])
            return matches[0] if len(matches) == 1 else None
        candidate = Path(entry["path"]).expanduser()
        if not candidate.is_absolute() and root is not None:
            candidate = Path(root) / candidate
        return by_path.get(os.path.abspath(candidate))

    captions = index.ensure_captions(text_encoder_spec, text_encoder.dim)
    wanted: dict[str, str] = {}
    for entry in entries:
        image_id = resolve(entry)
        if image_id is None:
            report.captions_unmatched.append(entry.get("id") or entry.get("path", "?"))
        else:
            wanted[image_id] = entry["caption"].strip()

    stored = {}
    ids = list(wanted)
    for start in range(0, len(ids), index.max_batch):
        page = captions.get(ids=ids[start : start + index.max_batch], include=["documents"])
        stored.update(zip(page["ids"], page["documents"]))
    changed = [i for i in ids if stored.get(i) != wanted[i]]
    report.captions_unchanged = len(ids) - len(changed)
    for start in range(0, len(changed), batch_size):
        report.captions_added += store_captions(index, known, {i: wanted[i] for i in changed[start : start + batch_size]}, text_encoder)
    report.seconds = time.perf_counter() - started
    return report


def caption_gallery(
    index: GalleryIndex,
    captioner: Any,
    prompt: str,
    text_encoder: TextEncoder,
    text_encoder_spec: str,
    *,
    workers: int = 4,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> IndexReport:
    """Caption every indexed image that has no caption yet, with a vision `Model`, into the caption
    channel. Each batch is stored as soon as it is captioned (a killed run resumes), and every call
    goes through the call cache (keyed by the image hash), so re-captioning costs nothing."""
    from lensgraph.pipeline.models.calls import ImageInput, caption_image

    report = IndexReport(folder="")
    started = time.perf_counter()
    known = index.all_metadata()
    todo = sorted((m.get("path", ""), i) for i, m in known.items() if not m.get("caption"))
    report.captions_unchanged = len(known) - len(todo)
    index.ensure_captions(text_encoder_spec, text_encoder.dim)

    def caption_one(item: tuple[str, str]) -> tuple[str, str | Exception]:
        path, image_id = item
        try:
            image = ImageInput.from_path(path)
            check_unchanged(image_id, image.id, path)
            text = caption_image(captioner, prompt, image, stage="index-caption").text
            return image_id, text if text else LensgraphError("empty caption")
        except LensgraphError as e:
            return image_id, e

    done = 0
    if progress:
        progress(0, len(todo))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        captions: dict[str, str] = {}
        for image_id, result in bounded_map(caption_one, chunk, workers, window=2 * max(workers, 1)):
            done += 1
            if isinstance(result, Exception):
                report.skipped.append((known[image_id].get("path", image_id), f"caption failed: {result}"))
            else:
                captions[image_id] = result
            if progress:
                progress(done, len(todo))
        if captions:
            report.captions_added += store_captions(index, known, captions, text_encoder)
    report.seconds = time.perf_counter() - started
    return report
