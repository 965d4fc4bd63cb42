"""Flickr30K and MSCOCO text-to-image retrieval on Karpathy's splits.

Karpathy's files (dataset_flickr30k.json, dataset_coco.json; cs.stanford.edu/people/karpathy/deepimagesent):

    {"dataset": "coco", "images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
      "imgid": 0, "split": "test", "cocoid": 391895, "sentids": [...],
      "sentences": [{"raw": "A man with a red helmet ...", "tokens": [...], "imgid": 0, "sentid": 770337}]}]}

Flickr30K entries have no `filepath` nor `cocoid`. Splits: train, val, test (and restval for COCO).
The standard benchmarks are split="test": 1,000 Flickr30K images / 5,000 COCO images, each of their
captions a query whose one target is its image. Image ids: `cocoid` for COCO, the file stem for
Flickr30K. Query id: `sentid`. A few COCO images have 6-7 captions; `max_captions=5` (default)
keeps the first five, giving the usual 5,000 / 25,000 queries; None keeps them all.

The whole file is parsed at once (dataset_coco.json is ~140 MB: a few seconds, a few hundred MB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lensgraph.pipeline.evaluation.datasets.base import Dataset, Query, check_gallery, check_queries, first_existing, read_json
from lensgraph.pipeline.errors import LensgraphError

FILES = {"flickr30k": "dataset_flickr30k.json", "mscoco": "dataset_coco.json"}
SOURCE = (
    "Karpathy splits: caption_datasets.zip from https://cs.stanford.edu/people/karpathy/deepimagesent/ "
    "(dataset_flickr30k.json, dataset_coco.json); images: Flickr30K (flickr30k-images/) or COCO 2014 (val2014/)"
)


def image_path(images: Path, entry: dict[str, Any], nested: bool) -> Path:
    """<images>/<filepath>/<filename> when `images` holds the filepath folders, else <images>/<filename>."""
    filepath = entry.get("filepath")
    if filepath and nested:
        return images / filepath / entry["filename"]
    return images / entry["filename"]


def load(
    annotations: Path,
    images: Path,
    split: str = "test",
    flavour: str = "flickr30k",
    max_captions: int | None = 5,
) -> Dataset:
    """Karpathy `split` of Flickr30K or MSCOCO. `annotations`: the Karpathy JSON, or the folder
    holding it; `images`: the image folder (Flickr30K: flickr30k-images; COCO: the folder holding
    val2014/, or val2014 itself)."""
    file = annotations
    if annotations.is_dir():
        file = first_existing(
            [annotations / FILES[flavour], annotations / "annotations" / FILES[flavour]],
            f"{flavour} Karpathy split file",
            SOURCE,
        )
    data = read_json(file, f"{flavour} Karpathy split file", SOURCE)
    entries = [e for e in data["images"] if e.get("split") == split]
    if not entries:
        splits = sorted({str(e.get("split")) for e in data["images"]})
        raise LensgraphError(f"{file}: no images in split {split!r} (splits there: {', '.join(splits)}).")
    nested = bool(entries) and bool(entries[0].get("filepath")) and (images / entries[0]["filepath"]).is_dir()
    queries: list[Query] = []
    gallery: dict[str, Path] = {}
    for entry in entries:
        image_id = str(entry["cocoid"]) if "cocoid" in entry else Path(entry["filename"]).stem
        path = image_path(images, entry, nested)
        if path.exists():
            gallery[image_id] = path
        sentences = entry["sentences"] if max_captions is None else entry["sentences"][:max_captions]
        for sentence in sentences:
            queries.append(
                Query(
                    id=str(sentence["sentid"]),
                    text=str(sentence["raw"]).strip(),
                    reference=None,
                    targets=(image_id,),
                    extra={"target": image_id},
                )
            )
    check_gallery(gallery, len(entries), images, f"{flavour} {split} images", SOURCE)
    check_queries(queries, gallery, flavour)
    return Dataset(name=flavour, split=split, queries=queries, images=gallery, task="t2i")
