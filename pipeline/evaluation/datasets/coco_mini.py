"""coco-mini (../shared/data/coco-mini, see its README): 159 real COCO photos, fully labelled.

    cir_<split>.json            CIRCO format plus "kind" (add / remove / replace)
    t2i_<split>.json            [{"id", "image_id", "caption"}]: each image's 5th caption -> its image
    images/<12-digit id>.jpg    the gallery
    gallery_captions.jsonl      {"id": "<12-digit id>", "caption": "..."}: captions 1-4 of each image

split "dev" (also "val") reads cir_dev.json / t2i_dev.json; another split name reads
cir_<split>.json. Image ids are COCO ids without padding ("139"), as in CIRCO. Metrics as CIRCO:
mAP@K over `targets` (gt_img_ids), Recall@K of `extra["target"]` (target_img_id).
"""

from __future__ import annotations

import json
from pathlib import Path

from lensgraph.pipeline.evaluation.datasets.base import Dataset, Query, check_gallery, check_queries, missing, read_json
from lensgraph.pipeline.evaluation.datasets.circo import coco_gallery, parse_queries
from lensgraph.pipeline.errors import LensgraphError

SOURCE = "coco-mini ships with the project: ../shared/data/coco-mini (set LENSGRAPH_COCO_MINI to move it)"


def root_of(path: Path) -> Path:
    if path.is_file():
        return path.parent
    if path.name == "images" and not (path / "images").is_dir():
        return path.parent
    return path


def read_captions(path: Path) -> dict[str, str]:
    captions: dict[str, str] = {}
    if not path.is_file():
        raise missing(path, "coco-mini gallery captions", SOURCE)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    captions[str(int(row["id"]))] = str(row["caption"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    raise LensgraphError(f'{path}:{number}: expected {{"id": ..., "caption": ...}}') from None
    return captions


def load(annotations: Path, images: Path, split: str = "dev", kind: str = "cir", text: str = "relative") -> Dataset:
    """coco-mini composed (kind="cir") or text-to-image (kind="t2i") queries. `annotations`: the
    coco-mini folder (or a query file in it); `images`: the coco-mini folder or its images/."""
    if kind not in ("cir", "t2i"):
        raise LensgraphError(f"coco-mini kind={kind!r}: expected 'cir' or 't2i'.")
    name = "dev" if split in ("dev", "val") else split
    root = root_of(annotations)
    query_file = annotations if annotations.is_file() else root / f"{kind}_{name}.json"
    items = read_json(query_file, f"coco-mini {kind} queries", SOURCE)
    if kind == "cir":
        queries = parse_queries(items, text)
    else:
        queries = [
            Query(
                id=str(item["id"]),
                text=str(item["caption"]).strip(),
                reference=None,
                targets=(str(item["image_id"]),),
                extra={"target": str(item["image_id"]), **({"family": item["family"]} if item.get("family") else {})},
            )
            for item in items
        ]
    folder = images / "images" if (images / "images").is_dir() else images
    gallery = coco_gallery(folder)
    check_gallery(gallery, len(gallery), folder, "coco-mini gallery images", SOURCE)
    captions = read_captions(root_of(images) / "gallery_captions.jsonl")  # beside the photos: query files may live elsewhere
    check_queries(queries, gallery, "coco-mini")
    return Dataset(name=f"coco-mini-{kind}", split=name, queries=queries, images=gallery, captions=captions, task=kind)
