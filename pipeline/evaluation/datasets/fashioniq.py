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
"<category>-<index in its captions file>". `kind` is the category.

The protocol (CLIP4Cir, SEARLE, CIReVL validation): each category is ranked against its own split's
images (val: 3,817 dress / 6,346 shirt / 5,373 toptee), the reference stays in the ranking, and
papers report R@10 and R@50 per category and the mean of the three categories (not a mean pooled
over queries). Loading several categories gives one `Dataset.parts` entry per category, each with
its own gallery; `images` and `queries` of the whole are the unions, for lookups only.

The two relative captions are joined as the reference code joins them,
f"{c0.strip('.?, ')} and {c1.strip('.?, ')}", an empty caption included (" and is red").
`capitalize=True` capitalises the first one, as CLIP4Cir's and SEARLE's validation do.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lensgraph.pipeline.evaluation.datasets.base import Dataset, Query, check_gallery, check_queries, read_json, scan_images
from lensgraph.pipeline.errors import LensgraphError

SOURCE = (
    "FashionIQ captions and image splits: https://github.com/XiaoxiaoGuo/fashion-iq; images: "
    "https://github.com/hongwang600/fashion-iq-metadata (or the .png release used by CLIP4Cir/SEARLE)"
)
CATEGORIES = ("dress", "shirt", "toptee")
RECALL_KS = (10, 50)


def join_captions(captions: list[str], capitalize: bool = False) -> str:
    """The two relative captions as one instruction, exactly as the reference code joins them."""
    parts = [str(c).strip(".?, ") for c in captions]
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
    folder = image_folder(images)
    on_disk = scan_images(folder)
    parts = {c: load_category(annotations, folder, on_disk, split, c, capitalize) for c in categories}
    if len(parts) == 1:
        return next(iter(parts.values()))
    return Dataset(
        name="fashioniq", split=split, task="cir", keep_reference=True, recall_ks=RECALL_KS, parts=parts,
        queries=[q for part in parts.values() for q in part.queries],
        images={i: p for part in parts.values() for i, p in part.images.items()},
    )


def load_category(
    annotations: Path, folder: Path, on_disk: dict[str, Path], split: str, category: str, capitalize: bool
) -> Dataset:
    items: list[dict[str, Any]] = read_json(
        annotations / "captions" / f"cap.{category}.{split}.json", f"FashionIQ {category} {split} captions", SOURCE
    )
    queries = []
    for n, item in enumerate(items):
        target = item.get("target")
        extra: dict[str, Any] = {"captions": list(item["captions"]), "category": category}
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
    names = read_json(
        annotations / "image_splits" / f"split.{category}.{split}.json", f"FashionIQ {category} {split} image split", SOURCE
    )
    wanted = list(dict.fromkeys(names))
    gallery = {asin: on_disk[asin] for asin in wanted if asin in on_disk}
    check_gallery(gallery, len(wanted), folder, f"FashionIQ {category} images (<asin>.png)", SOURCE)
    check_queries(queries, gallery, f"fashioniq {category}")
    return Dataset(name=f"fashioniq-{category}", split=split, queries=queries, images=gallery, task="cir",
                   keep_reference=True, recall_ks=RECALL_KS)
