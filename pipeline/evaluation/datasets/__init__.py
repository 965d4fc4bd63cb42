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

from pathlib import Path
from typing import Any

from lensgraph.pipeline.evaluation.datasets.base import (  # noqa: F401 (the package's public names)
    IMAGE_SUFFIXES,
    Dataset,
    Query,
    check_gallery,
    check_queries,
    first_existing,
    missing,
    read_json,
    scan_images,
)
from lensgraph.pipeline.errors import LensgraphError


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
        from lensgraph.pipeline.evaluation.datasets import circo

        return circo.load(annotations, images, **options)
    if key == "cirr":
        from lensgraph.pipeline.evaluation.datasets import cirr

        return cirr.load(annotations, images, **options)
    if key in ("fashioniq", "fashion-iq", "fiq"):
        from lensgraph.pipeline.evaluation.datasets import fashioniq

        return fashioniq.load(annotations, images, **options)
    if key in ("flickr30k", "flickr", "mscoco", "coco"):
        from lensgraph.pipeline.evaluation.datasets import t2i

        flavour = "flickr30k" if key.startswith("flickr") else "mscoco"
        return t2i.load(annotations, images, flavour=flavour, **options)
    if key in ("visdial", "chatir"):
        from lensgraph.pipeline.evaluation.datasets import visdial

        return visdial.load(annotations, images, **options)
    if key in ("coco-mini", "coco-mini-cir", "coco-mini-t2i"):
        from lensgraph.pipeline.evaluation.datasets import coco_mini

        if key != "coco-mini":
            implied = key.rsplit("-", 1)[1]
            if options.setdefault("kind", implied) != implied:
                raise LensgraphError(f"Dataset {name!r} conflicts with kind={options['kind']!r}.")
        return coco_mini.load(annotations, images, **options)
    raise LensgraphError(
        f"Unknown dataset {name!r}. Known: circo, cirr, fashioniq, flickr30k, mscoco, visdial, "
        "coco-mini (coco-mini-cir, coco-mini-t2i)."
    )

