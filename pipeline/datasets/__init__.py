"""Benchmark loaders: each reads a benchmark's official files, unchanged, into plain data.

Every quirk of a benchmark (file layout, id formats, how two FashionIQ captions are joined, CIRR's
empty captions, the CIRR test split being called "test1") lives in this package and nowhere else.
The rest of lensgraph sees a `Dataset`: queries with string ids and a gallery mapping each dataset
image id to a file path.

    load_dataset("circo", Path("CIRCO"), Path("CIRCO/COCO2017_unlabeled"), split="val")
    load_dataset("coco-mini-cir", coco_mini_root, coco_mini_root)

Image ids are the benchmark's own ids, as strings: CIRCO/coco-mini COCO ids without zero padding
("397133"), CIRR image names ("dev-244-0-img0"), FashionIQ ASINs, Flickr30K file stems, MSCOCO
`cocoid`s, ChatIR file stems ("000000185565"). Gallery images that are not on disk are left out of
`Dataset.images` and counted in a logged warning; a gallery with no image at all is an error.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import LensgraphError

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
    """"cir", "t2i" or "chat": which standard metric set applies (see pipeline.metrics.summarize)."""
    keep_reference: bool = False
    """The official protocol leaves the reference image in the ranking (FashionIQ, CIRCO); CIRR's
    and coco-mini's remove it. `lensgraph eval --keep-reference/--drop-reference` overrides it."""
    recall_ks: tuple[int, ...] = ()
    """The Recall@K cut-offs the benchmark reports, when they differ from the task's defaults."""
    parts: dict[str, Dataset] = field(default_factory=dict)
    """Benchmarks scored as separate galleries (FashionIQ's categories): each part is a dataset of
    its own, run against its own index; the summary is the mean over the parts."""


def load_dataset(name: str, annotations: Path, images: Path, split: str | None = None, **options: Any) -> Dataset:
    """Load a benchmark by name. `annotations` is the annotation file or the dataset root, as each
    loader documents; `images` is the folder the benchmark's image paths resolve against.
    `split` defaults to the benchmark's usual evaluation split: "val" for CIRCO, CIRR, FashionIQ
    and VisDial, "test" (Karpathy) for Flickr30K/MSCOCO, "dev" for coco-mini.

    Names: "circo", "cirr", "fashioniq", "flickr30k", "mscoco", "visdial" (ChatIR protocol),
    "coco-mini" (with kind="cir"|"t2i"; aliases "coco-mini-cir", "coco-mini-t2i").
    Options go to the loader: CIRCO `text=`, FashionIQ `categories=`/`capitalize=`, Karpathy
    `max_captions=`, VisDial `search_space=`, CIRR `version=`.
    """
    key = name.lower().replace("_", "-")
    annotations, images = Path(annotations).expanduser(), Path(images).expanduser()
    if split is not None:
        options["split"] = split
    if key == "circo":
        from pipeline.datasets import circo

        return circo.load(annotations, images, **options)
    if key == "cirr":
        from pipeline.datasets import cirr

        return cirr.load(annotations, images, **options)
    if key in ("fashioniq", "fashion-iq", "fiq"):
        from pipeline.datasets import fashioniq

        return fashioniq.load(annotations, images, **options)
    if key in ("flickr30k", "flickr", "mscoco", "coco"):
        from pipeline.datasets import t2i

        flavour = "flickr30k" if key.startswith("flickr") else "mscoco"
        return t2i.load(annotations, images, flavour=flavour, **options)
    if key in ("visdial", "chatir"):
        from pipeline.datasets import visdial

        return visdial.load(annotations, images, **options)
    if key in ("coco-mini", "coco-mini-cir", "coco-mini-t2i"):
        from pipeline.datasets import coco_mini

        if key != "coco-mini":
            implied = key.rsplit("-", 1)[1]
            if options.setdefault("kind", implied) != implied:
                raise LensgraphError(f"Dataset {name!r} conflicts with kind={options['kind']!r}.")
        return coco_mini.load(annotations, images, **options)
    raise LensgraphError(
        f"Unknown dataset {name!r}. Known: circo, cirr, fashioniq, flickr30k, mscoco, visdial, "
        "coco-mini (coco-mini-cir, coco-mini-t2i)."
    )


# ---- helpers shared by the loaders -------------------------------------------------------------


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
