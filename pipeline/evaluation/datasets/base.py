"""The plain data every benchmark loader produces (`Query`, `Dataset`) and the helpers the loaders
share (reading files, scanning images, checking what was found). Imports nothing of the loaders."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lensgraph.pipeline.errors import LensgraphError

log = logging.getLogger("lensgraph")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class Query:
    id: str
    """The dataset's query id, as a string (CIRCO `id`, CIRR `pairid`, Karpathy `sentid`, ...)."""
    text: str
    """The instruction (CIR), the caption (T2I) or, for chat, the last turn of the dialogue."""
    reference: str | None
    """Dataset image id of the reference image; None for T2I and chat."""
    targets: tuple[str, ...]
    """Dataset image ids that count as correct; empty on test splits (ground truth withheld)."""
    kind: str = ""
    """Query kind where the dataset has one (coco-mini: add/remove/replace; FashionIQ: category)."""
    subset: tuple[str, ...] = ()
    """CIRR `img_set.members` (the reference is one of them), for Recall_subset; else empty."""
    dialogue: tuple[str, ...] = ()
    """Chat: the caption, then one "question? answer" string per round."""
    extra: dict = field(default_factory=dict)
    """Anything else a writer or metric needs: `target` (the primary target, CIRCO's
    target_img_id / CIRR's target_hard), `pairid`, `shared_concept`, raw captions, ..."""


@dataclass
class Dataset:
    name: str
    split: str
    queries: list[Query]
    images: dict[str, Path]
    """Dataset image id -> file path: the gallery of this split."""
    captions: dict[str, str] = field(default_factory=dict)
    """Dataset image id -> caption, when the dataset ships captions (coco-mini)."""
    task: str = ""
    """"cir", "t2i" or "chat": which standard metric set applies (see lensgraph.pipeline.evaluation.metrics.summarize)."""
    keep_reference: bool = False
    """The official protocol leaves the reference image in the ranking (FashionIQ, CIRCO); CIRR's
    and coco-mini's remove it. `lensgraph eval --keep-reference/--drop-reference` overrides it."""
    recall_ks: tuple[int, ...] = ()
    """The Recall@K cut-offs the benchmark reports, when they differ from the task's defaults."""
    parts: dict[str, Dataset] = field(default_factory=dict)
    """Benchmarks scored as separate galleries (FashionIQ's categories): each part is a dataset of
    its own, run against its own index; the summary is the mean over the parts."""


def missing(path: Path, what: str, source: str) -> LensgraphError:
    """The error for an expected file or folder that is not there, saying where to get it."""
    return LensgraphError(f"{what} not found: expected {path}. {source}")


def first_existing(candidates: Iterable[Path], what: str, source: str) -> Path:
    """The first candidate path that exists; else an error naming the first (preferred) one."""
    candidates = list(candidates)
    for c in candidates:
        if c.exists():
            return c
    tried = "" if len(candidates) == 1 else f" (also tried {', '.join(str(c) for c in candidates[1:])})"
    raise missing(candidates[0], what, source + tried)


def read_json(path: Path, what: str, source: str) -> Any:
    """Parse a JSON file, with a clear error when it is missing or malformed."""
    if not path.is_file():
        raise missing(path, what, source)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise LensgraphError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}).") from None


def scan_images(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """File stem -> path for the image files directly in `folder`, sorted by name (one directory
    listing, so it stays fast for COCO's 123K unlabeled images). Missing folder -> empty dict."""
    found: dict[str, Path] = {}
    try:
        entries = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return found
    with entries:
        for entry in sorted(entries, key=lambda e: e.name):
            name = entry.name
            dot = name.rfind(".")
            if dot > 0 and name[dot:].lower() in suffixes and entry.is_file():
                found.setdefault(name[:dot], Path(folder) / name)
    return found


def check_gallery(images: dict[str, Path], expected: int, where: Path, what: str, source: str) -> None:
    """Fail when no gallery image was found; warn when some are missing."""
    if not images:
        raise missing(where, what, source)
    if len(images) < expected:
        log.warning("%s: %d of %d gallery images are missing under %s", what, expected - len(images), expected, where)


def check_queries(queries: list[Query], images: dict[str, Path], name: str) -> None:
    """Warn (never fail) when references or targets are not in the gallery."""
    bad_ref = sum(1 for q in queries if q.reference is not None and q.reference not in images)
    bad_tgt = sum(1 for q in queries if q.targets and not any(t in images for t in q.targets))
    if bad_ref:
        log.warning("%s: %d queries have a reference image missing from the gallery", name, bad_ref)
    if bad_tgt:
        log.warning("%s: %d queries have no target image in the gallery", name, bad_tgt)
