"""CIRR (Liu et al., ICCV 2021): composed retrieval on NLVR2 photos.

Official layout (github.com/Cuberick-Orion/CIRR, README "Dataset File Structure"):

    cirr/captions/cap.rc2.{train,val,test1}.json
        [{"pairid": 12063, "reference": "test1-147-1-img1", "target_hard": "...",
          "target_soft": {"...": 1.0}, "caption": "...",
          "img_set": {"id": 1, "members": [6 names], "reference_rank": 3, "target_rank": 4}}]
        (test1: no target_hard / target_soft / target_rank)
    cirr/image_splits/split.rc2.{train,val,test1}.json   {"test1-147-1-img1": "./test1/test1-147-1-img1.png"}
    cirr/img_raw/{train/<n>,dev,test1}/<name>.png         (the NLVR2 images; relative paths above)

The test split is named "test1" in the files; split="test" is accepted for it. Recall@K counts
`target_hard` (in `targets` and `extra["target"]`); `img_set.members` is `subset`, for
Recall_subset@K. `extra` keeps `pairid` (int, the key of test-server submissions), `target_soft`
and `img_set_id`. An empty caption (a few exist) becomes "the same image", as ImageScope does;
`extra["empty_caption"]` marks it.

The reference is never a correct answer: CIRR's evaluation removes it from the ranking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lensgraph.pipeline.evaluation.datasets.base import Dataset, Query, check_gallery, check_queries, first_existing, read_json
from lensgraph.pipeline.errors import LensgraphError

SOURCE = (
    "CIRR annotations: git clone -b cirr_dataset https://github.com/Cuberick-Orion/CIRR cirr; "
    "raw images come from NLVR2 (https://lil.nlp.cornell.edu/nlvr/, request access)"
)
SPLITS = {"train": "train", "val": "val", "dev": "val", "test": "test1", "test1": "test1"}
EMPTY_CAPTION = "the same image"


def file_split(split: str) -> str:
    try:
        return SPLITS[split]
    except KeyError:
        raise LensgraphError(f"CIRR split {split!r}: expected train, val or test (test1).") from None


def root_of(annotations: Path) -> Path:
    """The CIRR annotation root (holding captions/ and image_splits/), from the root or a captions file."""
    if annotations.is_file():  # .../cirr/captions/cap.rc2.val.json
        return annotations.parent.parent
    if (annotations / "cirr" / "captions").is_dir():
        return annotations / "cirr"
    return annotations


def image_base(images: Path, first_relpath: str | None) -> Path:
    """The folder the split file's relative paths resolve against: `images` or `images/img_raw`."""
    if first_relpath is None:
        return images
    for base in (images, images / "img_raw", images / "cirr" / "img_raw"):
        if (base / first_relpath).exists():
            return base
    return images


def parse_queries(items: list[dict[str, Any]]) -> list[Query]:
    queries = []
    for item in items:
        caption = str(item.get("caption") or "").strip()
        extra: dict[str, Any] = {"pairid": int(item["pairid"]), "img_set_id": item["img_set"].get("id")}
        if not caption:
            caption, extra["empty_caption"] = EMPTY_CAPTION, True
        target = item.get("target_hard")
        if target:
            extra["target"] = target
            extra["target_soft"] = dict(item.get("target_soft") or {})
        queries.append(
            Query(
                id=str(item["pairid"]),
                text=caption,
                reference=item["reference"],
                targets=(target,) if target else (),
                subset=tuple(item["img_set"]["members"]),
                extra=extra,
            )
        )
    return queries


def load(annotations: Path, images: Path, split: str = "val", version: str = "rc2") -> Dataset:
    """CIRR `split` ("val", "test"/"test1", "train"). `annotations`: the `cirr` folder (or its
    parent, or a captions file); `images`: the folder the image_splits paths resolve against
    (`cirr/img_raw`, or its parent `cirr`)."""
    name = file_split(split)
    root = root_of(annotations)
    captions_file = annotations if annotations.is_file() else root / "captions" / f"cap.{version}.{name}.json"
    items = read_json(captions_file, f"CIRR {name} captions", SOURCE)
    split_file = first_existing(
        [root / "image_splits" / f"split.{version}.{name}.json"], f"CIRR {name} image split", SOURCE
    )
    relpaths: dict[str, str] = read_json(split_file, f"CIRR {name} image split", SOURCE)
    base = image_base(images, next(iter(relpaths.values()), None))
    gallery = {}
    for image_name, rel in relpaths.items():
        path = base / rel
        if path.exists():
            gallery[image_name] = path
    check_gallery(gallery, len(relpaths), base, f"CIRR {name} images (NLVR2 .png files)", SOURCE)
    queries = parse_queries(items)
    check_queries(queries, gallery, "cirr")
    return Dataset(name="cirr", split=name, queries=queries, images=gallery, task="cir")
