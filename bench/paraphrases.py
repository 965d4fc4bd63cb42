"""Write the paraphrase dev sets: coco-mini dev's own queries asked the way people ask.

    python bench/paraphrases.py [--coco-mini ../shared/data/coco-mini] [--out bench/data]

From each composed query of `cir_dev.json` (its reference, kind and objects, read back from dev's
phrasing) one request is written in one of the families below, in turn, with the same correct
images; each text-to-image query of `t2i_dev.json` is rewritten as a person types it. The
families are ours, not the benchmark's, and share no template with dev:

- word_order: the object first, the verb after ("a microwave would be nice in there");
- synonym: a synonym or hypernym in place of COCO's label name ("sofa", "puppy", "telly", "some fruit");
- misspelling: one typo in the object's name;
- keep_context: says what stays ("keep the people, add a dog");
- several_objects: more than one object in one request (what stays, what goes, what comes);
- attribute_count: sizes, colours, plurals and counts the labels cannot check ("two small bowls");
- casual: typed fast (lower case, no articles, "w/", "pls");
- question: asked as a question ("got one like this without the car?");
- t2i_typed: a text-to-image caption typed like a search box (no articles, lower case, a typo sometimes).

The synonyms below are the data's (how people name COCO's things), never the product's: the
product matches words through WordNet. The held-out split is not read.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COCO_MINI = ROOT.parent / "shared" / "data" / "coco-mini"

DEV_FAMILIES = [  # dev's own phrasings, in the order they are tried
    ("dev: also has", re.compile(r"^also has (?:an? )?(?P<x>.+)$")),
    ("dev: add", re.compile(r"^add (?:an? )?(?P<x>.+)$")),
    ("dev: now there is also", re.compile(r"^now there is also (?:an? )?(?P<x>.+)$")),
    ("dev: same scene but with", re.compile(r"^same kind of scene but with (?:an? )?(?P<x>.+?)(?: too)?$")),
    ("dev: without", re.compile(r"^without the (?P<b>.+)$")),
    ("dev: is gone", re.compile(r"^the (?P<b>.+) is gone$")),
    ("dev: remove", re.compile(r"^remove the (?P<b>.+)$")),
    ("dev: swap for", re.compile(r"^swap the (?P<b>.+) for (?:an? )?(?P<x>.+)$")),
    ("dev: replace with", re.compile(r"^replace the (?P<b>.+) with (?:an? )?(?P<x>.+)$")),
    ("dev: instead of", re.compile(r"^has (?:an? )?(?P<x>.+) instead of the (?P<b>.+)$")),
]

FAMILIES = ["word_order", "synonym", "misspelling", "keep_context", "several_objects", "attribute_count",
            "casual", "question"]

SYNONYMS = {  # how people name COCO's categories, beside the label name
    "person": ["someone", "a man", "people"], "couch": ["sofa", "settee"], "dog": ["puppy", "pooch"],
    "tv": ["telly", "television"], "car": ["automobile"], "cell phone": ["mobile phone", "smartphone"],
    "bicycle": ["bike"], "motorcycle": ["motorbike"], "airplane": ["plane", "aircraft"],
    "dining table": ["table"], "potted plant": ["houseplant", "plant in a pot"], "laptop": ["notebook computer"],
    "apple": ["some fruit"], "banana": ["some fruit"], "orange": ["some fruit"], "broccoli": ["some vegetables"],
    "carrot": ["some vegetables"], "cup": ["mug"], "bowl": ["dish"], "sports ball": ["ball"], "handbag": ["purse"],
    "donut": ["doughnut"], "teddy bear": ["stuffed animal"], "wine glass": ["glass of wine"], "cat": ["kitty", "kitten"],
    "refrigerator": ["fridge"], "sandwich": ["sub"], "truck": ["lorry"], "bus": ["coach"], "sheep": ["lamb"],
    "cow": ["cattle"], "horse": ["pony"], "microwave": ["microwave oven"], "toilet": ["loo"], "bench": ["seat"],
    "skis": ["pair of skis"], "kite": ["kite in the sky"], "bird": ["seagull"], "umbrella": ["parasol"],
    "chair": ["seat"], "oven": ["stove"], "sink": ["basin"], "boat": ["ship"], "train": ["locomotive"],
    "clock": ["timepiece"], "vase": ["flower vase"], "book": ["novel"], "remote": ["remote control"],
    "knife": ["blade"], "suitcase": ["luggage"], "keyboard": ["computer keyboard"], "mouse": ["computer mouse"],
    "pizza": ["pie"], "cake": ["dessert"], "bed": ["mattress"], "tie": ["necktie"], "backpack": ["rucksack"],
}

ADJECTIVES = ["big", "small", "red", "white", "black", "old", "shiny", "wooden", "tiny", "large"]
COUNTS = ["two", "a couple of", "some", "three", "several"]


def plural(noun: str) -> str:
    head, _, last = noun.rpartition(" ")
    if last.endswith(("s", "sh", "ch", "x")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    elif last.endswith("fe"):
        last = last[:-2] + "ves"
    elif last not in ("sheep", "skis", "broccoli"):
        last += "s"
    return f"{head} {last}".strip()


def article(noun: str) -> str:
    if noun.startswith(("some ", "a ", "an ", "people", "pair")) or noun.endswith("s") and noun in ("skis",):
        return noun
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def typo(word: str, rng: random.Random) -> str:
    """One slip of the fingers in the longest word: two letters swapped, one doubled or one dropped."""
    parts = word.split(" ")
    i = max(range(len(parts)), key=lambda j: len(parts[j]))
    w = parts[i]
    j = rng.randrange(1, len(w) - 1)  # never the first letter: people rarely miss that one
    w = rng.choice([w[:j] + w[j + 1] + w[j] + w[j + 2:], w[:j] + w[j] + w[j:], w[:j] + w[j + 1:]])
    parts[i] = w
    return " ".join(parts)


def dev_family(text: str) -> tuple[str, dict[str, str]]:
    for name, pattern in DEV_FAMILIES:
        match = pattern.match(text.strip())
        if match:
            return name, {k: v for k, v in match.groupdict().items() if v}
    raise SystemExit(f"a dev phrasing this script does not know: {text!r}")


def salient(labels: dict[str, float], exclude: set[str]) -> str | None:
    ranked = sorted(((v or 0.0, k) for k, v in labels.items() if k not in exclude), reverse=True)
    return ranked[0][1] if ranked else None


def write(kind: str, family: str, x: str | None, b: str | None, keep: str | None, rng: random.Random) -> str | None:
    """One request of `family` for an edit of `kind` (add x / remove b / replace b with x), or None
    when the family cannot say it (a synonym-free object, nothing to keep)."""
    if family == "word_order":
        return {"add": lambda: rng.choice([f"{article(x)} would be nice in there", f"{article(x)} in it as well, please",
                                   f"{article(x)} somewhere in the picture"]),
                "remove": lambda: rng.choice([f"the {b}, take it out", f"the {b} has to go", f"the {b} should not be there"]),
                "replace": lambda: rng.choice([f"{article(x)} where the {b} was", f"{article(x)}, and the {b} taken away"])}[kind]()
    if family == "synonym":
        xs, bs = (rng.choice(SYNONYMS[x]) if x in SYNONYMS else None), (rng.choice(SYNONYMS[b]) if b in SYNONYMS else None)
        if kind == "add":
            return xs and f"also with {article(xs)}"
        if kind == "remove":
            return bs and ("without any people" if b == "person" else f"without the {bs.removeprefix('some ')}")
        return (xs or bs) and f"replace the {bs or b} with {article(xs or x)}"
    if family == "misspelling":
        return {"add": lambda: f"also has {article(typo(x, rng))}", "remove": lambda: f"without the {typo(b, rng)}",
                "replace": lambda: f"has {article(typo(x, rng))} instead of the {typo(b, rng)}"}[kind]()
    if family == "keep_context":
        if not keep:
            return None
        return {"add": lambda: f"keep the {keep} but add {article(x)}", "remove": lambda: f"keep the {keep}, lose the {b}",
                "replace": lambda: f"keep the {keep} and put {article(x)} in place of the {b}"}[kind]()
    if family == "several_objects":
        if not keep:
            return None
        return {"add": lambda: f"with the {keep} still there and {article(x)} added",
                "remove": lambda: f"the {keep} stays, no {b} though",
                "replace": lambda: f"remove the {b} and add {article(x)}, the {keep} can stay"}[kind]()
    if family == "attribute_count":
        adjective, count = rng.choice(ADJECTIVES), rng.choice(COUNTS)
        return {"add": lambda: rng.choice([f"with {article(adjective + ' ' + x)} too", f"with {count} {plural(x)}"]),
                "remove": lambda: f"no {plural(b)} at all",
                "replace": lambda: f"{article(adjective + ' ' + x)} instead of the {b}"}[kind]()
    if family == "casual":
        return {"add": lambda: rng.choice([f"like this but w/ {x}", f"this but add {x} pls", f"same pic + {x}"]),
                "remove": lambda: rng.choice([f"this one minus the {b}", f"same but no {b} pls", f"like this w/o {b}"]),
                "replace": lambda: rng.choice([f"same but {x} not {b}", f"this pic w/ {x} instead of {b}"])}[kind]()
    if family == "question":
        return {"add": lambda: rng.choice([f"do you have one like this with {article(x)}?", f"can you find this with {article(x)} in it?"]),
                "remove": lambda: rng.choice([f"got one like this without the {b}?", f"is there a version with no {b}?"]),
                "replace": lambda: f"any like this but with {article(x)} instead of the {b}?"}[kind]()
    raise ValueError(family)


def t2i_typed(caption: str, rng: random.Random) -> str:
    words = [w for w in re.findall(r"[a-zA-Z']+", caption.lower()) if w not in ("a", "an", "the", "is", "are")]
    if len(words) > 3 and rng.random() < 0.4:
        i = max(range(len(words)), key=lambda j: len(words[j]))
        words[i] = typo(words[i], rng)
    return rng.choice(["", "", "pic of ", "photo "]) + " ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco-mini", type=Path, default=COCO_MINI)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "data")
    args = parser.parse_args()
    rng = random.Random(17)
    labels = {}
    for line in (args.coco_mini / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        labels[str(row["id"])] = row.get("labels") or {}
    dev = json.loads((args.coco_mini / "cir_dev.json").read_text())
    out, turn = [], 0
    for item in dev:
        _, objects = dev_family(item["relative_caption"])
        x, b = objects.get("x"), objects.get("b")
        keep = salient(labels[str(item["reference_img_id"])], {x, b})
        for attempt in range(len(FAMILIES)):  # the next family in turn that can say it
            family = FAMILIES[(turn + attempt) % len(FAMILIES)]
            text = write(item["kind"], family, x, b, keep, rng)
            if text:
                break
        turn += 1
        out.append({**{k: item[k] for k in ("reference_img_id", "shared_concept", "target_img_id", "gt_img_ids", "kind")},
                    "id": len(out), "relative_caption": text, "family": family, "dev_id": item["id"]})
    t2i = [{"id": q["id"], "image_id": q["image_id"], "caption": t2i_typed(q["caption"], rng), "family": "t2i_typed"}
           for q in json.loads((args.coco_mini / "t2i_dev.json").read_text())]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cir_paraphrases.json").write_text(json.dumps(out, indent=1) + "\n")
    (args.out / "t2i_typed.json").write_text(json.dumps(t2i, indent=1) + "\n")
    counts: dict[str, int] = {}
    for q in out:
        counts[q["family"]] = counts.get(q["family"], 0) + 1
    print(counts, len(t2i))


if __name__ == "__main__":
    main()
