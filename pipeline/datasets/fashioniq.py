"""FashionIQ (Wu et al., CVPR 2021): composed retrieval of dresses, shirts and tops.

Official files (github.com/XiaoxiaoGuo/fashion-iq; layout as used by CLIP4Cir, SEARLE, CIReVL,
ImageScope):

    captions/cap.{dress,shirt,toptee}.{train,val,test}.json
        [{"candidate": "B00E9AWYWO", "target": "B00...", "captions": ["is a lighter color", "..."]}]
        (test: no "target")
    image_splits/split.{dress,shirt,toptee}.{train,val,test}.json   ["B00HINZY58", ...]
    images/<asin>.png

The starter kit in the official repo opens `<asin>.jpg`; the image release the CIR papers use has
`.png`. Both are accepted (whatever the folder holds). Queries have no ids in the files: the id is
"<category>-<index in its captions file>". `kind` is the category; evaluate one category at a time
for the standard protocol (gallery = that category's split), and average R@10/R@50 over the three.

The two relative captions are joined as f"{c0.strip('.?, ')} and {c1.strip('.?, ')}" (CIReVL,
SEARLE; ImageScope strips '.? '). `capitalize=True` capitalises the first one, as CLIP4Cir's
validation does. FashionIQ's evaluation does not remove the reference from the ranking
(`extra["exclude_reference"] = False`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.datasets import Dataset, Query, check_gallery, check_queries, read_json, scan_images
from pipeline.errors import LensgraphError

SOURCE = (
    "FashionIQ captions and image splits: https://github.com/XiaoxiaoGuo/fashion-iq; images: "
    "https://github.com/hongwang600/fashion-iq-metadata (or the .png release used by CLIP4Cir/SEARLE)"
)
CATEGORIES = ("dress", "shirt", "toptee")


def join_captions(captions: list[str], capitalize: bool = False) -> str:
    """The two relative captions as one instruction."""
    parts = [str(c).strip(".?, ") for c in captions if str(c).strip(".?, ")]
    if capitalize and parts:
        parts[0] = parts[0].capitalize()
    return " and ".join(parts)


def image_folder(images: Path) -> Path:
    return images / "images" if (images / "images").is_dir() else images


def load(
    annotations: Path,
    images: Path,
    split: str = "val",
    categories: Iterable[str] | str = CATEGORIES,
    capitalize: bool = False,
) -> Dataset:
    """FashionIQ `split` for `categories`. `annotations`: the root holding captions/ and
    image_splits/; `images`: the folder of <asin>.png (or the root holding images/)."""
    if isinstance(categories, str):
        categories = (categories,)
    categories = tuple(categories)
    for c in categories:
        if c not in CATEGORIES:
            raise LensgraphError(f"FashionIQ category {c!r}: expected some of {', '.join(CATEGORIES)}.")
    queries: list[Query] = []
    names: list[str] = []
    for category in categories:
        items: list[dict[str, Any]] = read_json(
            annotations / "captions" / f"cap.{category}.{split}.json", f"FashionIQ {category} {split} captions", SOURCE
        )
        for n, item in enumerate(items):
            target = item.get("target")
            extra: dict[str, Any] = {"captions": list(item["captions"]), "exclude_reference": False}
            if target:
                extra["target"] = target
            queries.append(
                Query(
                    id=f"{category}-{n}",
                    text=join_captions(item["captions"], capitalize),
                    reference=item["candidate"],
                    targets=(target,) if target else (),
                    kind=category,
                    extra=extra,
                )
            )
        names += read_json(
            annotations / "image_splits" / f"split.{category}.{split}.json",
            f"FashionIQ {category} {split} image split",
            SOURCE,
        )
    folder = image_folder(images)
    on_disk = scan_images(folder)
    wanted = list(dict.fromkeys(names))
    gallery = {asin: on_disk[asin] for asin in wanted if asin in on_disk}
    check_gallery(gallery, len(wanted), folder, "FashionIQ images (<asin>.png)", SOURCE)
    check_queries(queries, gallery, "fashioniq")
    return Dataset(name="fashioniq", split=split, queries=queries, images=gallery, task="cir")
