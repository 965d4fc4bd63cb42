"""CIRCO (Baldrati et al., ICCV 2023): composed retrieval on COCO 2017 unlabeled, several ground truths.

Official layout (github.com/miccunifi/CIRCO, README "Data Structure" and src/dataset.py):

    CIRCO/annotations/{val,test}.json        list of {"id", "reference_img_id", "relative_caption",
                                             "shared_concept", "target_img_id", "gt_img_ids"}
                                             (test: no target_img_id / gt_img_ids)
    CIRCO/COCO2017_unlabeled/unlabeled2017/000000243611.jpg ...   (COCO ids, zero-padded to 12)

Ids are COCO integer ids; here they become unpadded strings ("243611"). `target_img_id` is always
the first of `gt_img_ids` (README); it goes to `extra["target"]`, since CIRCO's Recall@K counts only
that image while mAP@K counts all of `gt_img_ids`. The gallery is every image of unlabeled2017
(~123K), as in CIRCO's own evaluation. The val queries' `semantic_aspects` go to
`extra["semantic_aspects"]`: the server reports mAP@10 per aspect. The reference stays in the
ranking (`Dataset.keep_reference`), as SEARLE, CIReVL and ImageScope validate; it is never a
ground truth, so `--drop-reference` can only raise the numbers.

`text`: "relative" (default) uses the relative caption alone, as ImageScope's loader
(pengfei-luo/ImageScope utils/data.py) and SEARLE's "a photo of $ that {caption}" do.
"concept" prefixes the shared concept: f"{shared_concept} {relative_caption}" (skipped when the
concept is empty). Unverified: we found no official CIRCO code that combines the two, and the exact
joining (plain space vs "that") varies between papers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lensgraph.pipeline.evaluation.datasets.base import Dataset, Query, check_gallery, check_queries, first_existing, read_json, scan_images
from lensgraph.pipeline.errors import LensgraphError

SOURCE = (
    "CIRCO annotations: git clone https://github.com/miccunifi/CIRCO (annotations/val.json, test.json); "
    "images: http://images.cocodataset.org/zips/unlabeled2017.zip"
)
TEXT_MODES = ("relative", "concept")
RECALL_KS = (5, 10, 25, 50)  # the server's Recall@K cut-offs (of target_img_id), next to mAP@5/10/25/50


def annotation_file(annotations: Path, split: str) -> Path:
    """The CIRCO root, its `annotations` folder, or the JSON file itself."""
    if annotations.is_file():
        return annotations
    return first_existing(
        [annotations / "annotations" / f"{split}.json", annotations / f"{split}.json"],
        f"CIRCO {split} annotations",
        SOURCE,
    )


def image_folder(images: Path) -> Path:
    """unlabeled2017 under `images` (directly, or inside COCO2017_unlabeled/), or `images` itself."""
    for candidate in (images / "unlabeled2017", images / "COCO2017_unlabeled" / "unlabeled2017"):
        if candidate.is_dir():
            return candidate
    return images


def coco_gallery(folder: Path) -> dict[str, Path]:
    """COCO-named images (12-digit stems) -> {unpadded id: path}."""
    return {str(int(stem)): path for stem, path in scan_images(folder).items() if stem.isdigit()}


def compose_text(item: dict[str, Any], text: str) -> str:
    relative = str(item["relative_caption"]).strip()
    if text == "relative":
        return relative
    if text == "concept":
        concept = str(item.get("shared_concept") or "").strip()
        return f"{concept} {relative}" if concept else relative
    raise LensgraphError(f"CIRCO text={text!r}: expected one of {', '.join(TEXT_MODES)}.")


def parse_queries(items: list[dict[str, Any]], text: str = "relative") -> list[Query]:
    """CIRCO-format annotation entries -> queries (shared with coco-mini, which adds `kind`)."""
    if text not in TEXT_MODES:
        raise LensgraphError(f"CIRCO text={text!r}: expected one of {', '.join(TEXT_MODES)}.")
    queries = []
    for item in items:
        gt = tuple(dict.fromkeys(str(i) for i in item.get("gt_img_ids") or ()))
        target = item.get("target_img_id")
        extra: dict[str, Any] = {
            "relative_caption": item["relative_caption"],
            "shared_concept": item.get("shared_concept", ""),
        }
        if target is not None:
            extra["target"] = str(target)
        if item.get("family"):  # the phrasing family of a paraphrase set (bench/data)
            extra["family"] = item["family"]
        if item.get("semantic_aspects"):
            extra["semantic_aspects"] = list(item["semantic_aspects"])
        queries.append(
            Query(
                id=str(item["id"]),
                text=compose_text(item, text),
                reference=str(item["reference_img_id"]),
                targets=gt or ((str(target),) if target is not None else ()),
                kind=str(item.get("kind", "")),
                extra=extra,
            )
        )
    return queries


def load(annotations: Path, images: Path, split: str = "val", text: str = "relative") -> Dataset:
    """CIRCO `split` ("val" or "test"). `annotations`: the CIRCO root, its annotations/ folder or a
    split JSON; `images`: the folder holding unlabeled2017/ (or COCO2017_unlabeled/), or
    unlabeled2017 itself."""
    items = read_json(annotation_file(annotations, split), f"CIRCO {split} annotations", SOURCE)
    queries = parse_queries(items, text)
    folder = image_folder(images)
    gallery = coco_gallery(folder)
    check_gallery(gallery, len(gallery), folder, "CIRCO images (COCO unlabeled2017, 000000xxxxxx.jpg)", SOURCE)
    check_queries(queries, gallery, "circo")
    return Dataset(name="circo", split=split, queries=queries, images=gallery, task="cir", keep_reference=True,
                   recall_ks=RECALL_KS)
