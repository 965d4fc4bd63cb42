"""Chat-based retrieval on VisDial 1.0 val, with ChatIR's protocol (Levy et al., NeurIPS 2023).

Official files (github.com/levymsn/ChatIR; PlugIR, Lee et al. ACL 2024, uses the same two):

    dialogues/VisDial_v1.0_queries_val.json
        [{"img": "unlabeled2017/000000185565.jpg",
          "dialog": ["<caption>", "is the photo in color? yes", ... 10 "question? answer" rounds]}]
    ChatIR_Protocol/Search_Space_val_50k.json     ["unlabeled2017/000000000008.jpg", ...]  (50,000 paths)

Both hold paths relative to a data folder (ChatIR's eval.py opens them as given; PlugIR joins them
to --data-dir, "a directory path containing unlabeled2017"). `images` is that folder. Other
dialogue files of the same shape (ChatIR's ChatGPT_BLIP2.json, ...) load the same way.

Each dialogue is one query: id = its index in the file, `dialogue` = the 11 rounds (round 0 is the
caption), `text` = the last round, `targets` = the image's file stem ("000000185565"). ChatIR
embeds the first r+1 rounds joined with ", " and reports Hits@10 per round, cumulatively (see
lensgraph.pipeline.evaluation.metrics.hits_at_k_per_round).
"""

from __future__ import annotations

from pathlib import Path

from lensgraph.pipeline.evaluation.datasets.base import Dataset, Query, check_gallery, check_queries, first_existing, read_json

SOURCE = (
    "ChatIR files: https://github.com/levymsn/ChatIR (dialogues/VisDial_v1.0_queries_val.json, "
    "ChatIR_Protocol/Search_Space_val_50k.json); images: COCO unlabeled2017 / VisDial val (https://visualdialog.org/data)"
)
DIALOGUE_FILE = "VisDial_v1.0_queries_val.json"
SEARCH_SPACE_FILE = "Search_Space_val_50k.json"


def image_id(relpath: str) -> str:
    return Path(relpath).stem


def resolver(images: Path, first: str | None):
    """Paths in the files resolve against `images`; if they do not, try the bare file name."""
    if first is None or (images / first).exists() or not (images / Path(first).name).exists():
        return lambda rel: images / rel
    return lambda rel: images / Path(rel).name


def load(
    annotations: Path,
    images: Path,
    split: str = "val",
    search_space: Path | None = None,
) -> Dataset:
    """ChatIR dialogues. `annotations`: the dialogue JSON, or a folder holding it (directly or in
    dialogues/); `search_space`: the gallery list (default: Search_Space_val_50k.json found next to
    the dialogues, in ChatIR_Protocol/ or Protocol/ beside them, or in `images`); `images`: the
    folder the paths in both files resolve against."""
    if annotations.is_dir():
        root = annotations
        dialogue_file = first_existing(
            [root / "dialogues" / DIALOGUE_FILE, root / DIALOGUE_FILE], "ChatIR dialogues", SOURCE
        )
    else:
        dialogue_file, root = annotations, annotations.parent
    if search_space is None:
        places = [root, root.parent, images]
        search_space = first_existing(
            [p / sub / SEARCH_SPACE_FILE for p in places for sub in ("ChatIR_Protocol", "Protocol", ".")],
            "ChatIR search space",
            SOURCE,
        )
    dialogues = read_json(dialogue_file, "ChatIR dialogues", SOURCE)
    space: list[str] = read_json(Path(search_space), "ChatIR search space", SOURCE)
    resolve = resolver(images, space[0] if space else None)
    gallery = {}
    for rel in space:
        path = resolve(rel)
        if path.exists():
            gallery[image_id(rel)] = path
    check_gallery(gallery, len(space), images, "ChatIR search-space images", SOURCE)
    queries = [
        Query(
            id=str(n),
            text=str(d["dialog"][-1]),
            reference=None,
            targets=(image_id(d["img"]),),
            dialogue=tuple(str(turn) for turn in d["dialog"]),
            extra={"target": image_id(d["img"])},
        )
        for n, d in enumerate(dialogues)
    ]
    check_queries(queries, gallery, "visdial")
    return Dataset(name="visdial", split=split, queries=queries, images=gallery, task="chat")
