"""Write the translated dev sets: 36 coco-mini dev queries asked in French, German, Spanish and Chinese.

    python bench/translations.py [--coco-mini ../shared/data/coco-mini] [--out bench/data]
    python bench/translations.py --report bench/runs --misread ../shared/data   # what bench/RESULTS.md shows
  (--report: the table, from the run folders; --misread: English requests read as another language)

Every fifth composed query of `cir_dev.json` (36 queries, 36 different references; 23 additions,
8 removals, 5 swaps), translated by us the way a speaker of each language would ask, not word for
word. Each language gets its own annotation file with the original query ids, correct images and
kind, so `lensgraph compare` pairs every translated query with its English original
(`cir_lang_en.json`, the same 36 queries as dev asks them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COCO_MINI = ROOT.parent / "shared" / "data" / "coco-mini"
LANGUAGES = ["fr", "de", "es", "zh"]

# dev id -> (English as dev asks it, French, German, Spanish, Chinese)
TRANSLATIONS: dict[int, tuple[str, str, str, str, str]] = {
    0: ("also has an oven", "il y a aussi un four", "hat auch einen Backofen", "también tiene un horno", "还有一个烤箱"),
    5: ("also has a dining table", "il y a aussi une table à manger", "hat auch einen Esstisch",
        "también tiene una mesa de comedor", "还有一张餐桌"),
    10: ("add a cup", "ajoute une tasse", "füge eine Tasse hinzu", "añade una taza", "加一个杯子"),
    15: ("add a dining table", "ajoute une table à manger", "füge einen Esstisch hinzu", "añade una mesa de comedor",
         "加一张餐桌"),
    20: ("without the broccoli", "sans le brocoli", "ohne den Brokkoli", "sin el brócoli", "不要西兰花"),
    25: ("the person is gone", "la personne n'est plus là", "die Person ist weg", "la persona ya no está",
         "那个人不见了"),
    30: ("remove the airplane", "enlève l'avion", "entferne das Flugzeug", "quita el avión", "去掉飞机"),
    35: ("remove the apple", "enlève la pomme", "entferne den Apfel", "quita la manzana", "去掉苹果"),
    40: ("also has a bus", "il y a aussi un bus", "hat auch einen Bus", "también tiene un autobús", "还有一辆公交车"),
    45: ("same kind of scene but with a bed too", "le même genre de scène, mais avec un lit en plus",
         "die gleiche Art von Szene, aber auch mit einem Bett", "el mismo tipo de escena pero también con una cama",
         "同样的场景，但也有一张床"),
    50: ("also has a dog", "il y a aussi un chien", "hat auch einen Hund", "también tiene un perro", "还有一只狗"),
    55: ("also has a bottle", "il y a aussi une bouteille", "hat auch eine Flasche", "también tiene una botella",
         "还有一个瓶子"),
    60: ("swap the kite for a tennis racket", "remplace le cerf-volant par une raquette de tennis",
         "tausche den Drachen gegen einen Tennisschläger", "cambia la cometa por una raqueta de tenis",
         "把风筝换成网球拍"),
    65: ("same kind of scene but with a refrigerator too", "le même genre de scène, mais avec un frigo en plus",
         "die gleiche Art von Szene, aber auch mit einem Kühlschrank",
         "el mismo tipo de escena pero también con un refrigerador", "同样的场景，但也有一台冰箱"),
    70: ("same kind of scene but with a boat too", "le même genre de scène, mais avec un bateau en plus",
         "die gleiche Art von Szene, aber auch mit einem Boot", "el mismo tipo de escena pero también con un barco",
         "同样的场景，但也有一条船"),
    75: ("remove the sandwich", "enlève le sandwich", "entferne das Sandwich", "quita el sándwich", "去掉三明治"),
    80: ("now there is also a book", "maintenant il y a aussi un livre", "jetzt gibt es auch ein Buch",
         "ahora también hay un libro", "现在还有一本书"),
    85: ("remove the bowl", "enlève le bol", "entferne die Schüssel", "quita el tazón", "去掉碗"),
    90: ("now there is also a person", "maintenant il y a aussi une personne", "jetzt ist auch eine Person da",
         "ahora también hay una persona", "现在还有一个人"),
    95: ("same kind of scene but with a bench too", "le même genre de scène, mais avec un banc en plus",
         "die gleiche Art von Szene, aber auch mit einer Bank", "el mismo tipo de escena pero también con un banco",
         "同样的场景，但也有一张长椅"),
    100: ("now there is also an oven", "maintenant il y a aussi un four", "jetzt gibt es auch einen Backofen",
          "ahora también hay un horno", "现在还有一个烤箱"),
    105: ("has a potted plant instead of the toilet", "une plante en pot à la place des toilettes",
          "eine Topfpflanze statt der Toilette", "tiene una planta en maceta en lugar del inodoro",
          "用盆栽代替马桶"),
    110: ("swap the fork for a bottle", "remplace la fourchette par une bouteille", "tausche die Gabel gegen eine Flasche",
          "cambia el tenedor por una botella", "把叉子换成瓶子"),
    115: ("replace the toilet with a potted plant", "remplace les toilettes par une plante en pot",
          "ersetze die Toilette durch eine Topfpflanze", "reemplaza el inodoro por una planta en maceta",
          "把马桶换成盆栽"),
    120: ("replace the dining table with a bed", "remplace la table à manger par un lit",
          "ersetze den Esstisch durch ein Bett", "reemplaza la mesa de comedor por una cama", "把餐桌换成床"),
    125: ("same kind of scene but with an umbrella too", "le même genre de scène, mais avec un parapluie en plus",
          "die gleiche Art von Szene, aber auch mit einem Regenschirm",
          "el mismo tipo de escena pero también con un paraguas", "同样的场景，但也有一把伞"),
    130: ("add a chair", "ajoute une chaise", "füge einen Stuhl hinzu", "añade una silla", "加一把椅子"),
    135: ("without the person", "sans la personne", "ohne die Person", "sin la persona", "不要那个人"),
    140: ("same kind of scene but with a truck too", "le même genre de scène, mais avec un camion en plus",
          "die gleiche Art von Szene, aber auch mit einem Lastwagen",
          "el mismo tipo de escena pero también con un camión", "同样的场景，但也有一辆卡车"),
    145: ("now there is also a bottle", "maintenant il y a aussi une bouteille", "jetzt gibt es auch eine Flasche",
          "ahora también hay una botella", "现在还有一个瓶子"),
    150: ("also has an elephant", "il y a aussi un éléphant", "hat auch einen Elefanten", "también tiene un elefante",
          "还有一头大象"),
    155: ("same kind of scene but with a scissors too", "le même genre de scène, mais avec des ciseaux en plus",
          "die gleiche Art von Szene, aber auch mit einer Schere", "el mismo tipo de escena pero también con unas tijeras",
          "同样的场景，但也有一把剪刀"),
    160: ("add a toilet", "ajoute des toilettes", "füge eine Toilette hinzu", "añade un inodoro", "加一个马桶"),
    165: ("without the laptop", "sans l'ordinateur portable", "ohne den Laptop", "sin el portátil", "不要笔记本电脑"),
    170: ("same kind of scene but with a book too", "le même genre de scène, mais avec un livre en plus",
          "die gleiche Art von Szene, aber auch mit einem Buch", "el mismo tipo de escena pero también con un libro",
          "同样的场景，但也有一本书"),
    175: ("now there is also an umbrella", "maintenant il y a aussi un parapluie", "jetzt gibt es auch einen Regenschirm",
          "ahora también hay un paraguas", "现在还有一把伞"),
}


NAMES = {"en": "English (dev as asked)", "fr": "French", "de": "German", "es": "Spanish", "zh": "Chinese"}


def report(runs: Path, metric: str = "mAP@5") -> str:
    """Per language: how many requests read as another language and got a translation, the metric without
    an LLM, with the plan alone (no translation step), with the translation, and the paired difference
    against the same queries asked in English."""
    from lensgraph.pipeline.evaluation.compare import load_run, paired_difference
    from lensgraph.pipeline.reasoning.objects import request_language

    english = load_run(runs / "cir-lang-en")
    rows = [f"| language | queries | read as not English | translated | no LLM | plan, no translation step | "
            f"plan after translation | translation step vs none (paired, 95% CI) | "
            f"vs the English originals ({metric}, paired, 95% CI) |", "|---|---|---|---|---|---|---|---|---|"]

    def paired(a: dict[str, float], b: dict[str, float]) -> str:
        d = paired_difference(a, b)
        return f"{d['mean']:+.1f} [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]; worse on {d['losses']}, better on {d['wins']}"

    for language in ["en", *LANGUAGES]:
        full = load_run(runs / f"cir-lang-{language}")
        nollm = load_run(runs / f"cir-lang-{language}-nollm")
        untranslated = runs / f"cir-lang-{language}-notranslate"
        texts = [r["text"] for r in full.records.values()]
        foreign = sum(request_language(t) is not None for t in texts)
        translated = sum(bool(r.get("translation")) for r in full.records.values())
        plan_only, step = "", ""
        if untranslated.is_dir():
            before = load_run(untranslated)
            plan_only = f"{before.summary['metrics'][full.final_stage][metric]:.1f}"
            step = paired(before.scores(metric), full.scores(metric))
        versus = paired(english.scores(metric), full.scores(metric)) if language != "en" else ""
        rows.append(f"| {NAMES[language]} | {len(texts)} | {foreign} | {translated} | "
                    f"{nollm.summary['metrics'][nollm.final_stage][metric]:.1f} | {plan_only} | "
                    f"{full.summary['metrics'][full.final_stage][metric]:.1f} | {step} | {versus} |")
    return "\n".join(rows)


def misread(data: Path) -> str:
    """How many English requests `request_language` reads as another language: coco-mini's dev sets, our
    paraphrases, and the official CIRCO, CIRR and FashionIQ validation requests."""
    import glob

    from lensgraph.pipeline.reasoning.objects import request_language

    sets = {
        "coco-mini cir_dev": [q["relative_caption"] for q in json.loads((data / "coco-mini/cir_dev.json").read_text())],
        "coco-mini t2i_dev": [q["caption"] for q in json.loads((data / "coco-mini/t2i_dev.json").read_text())],
        "our paraphrases and typed sets": [q.get("relative_caption") or q["caption"] for name in ("cir_paraphrases", "t2i_typed")
                                           for q in json.loads((ROOT / "bench/data" / f"{name}.json").read_text())],
        "CIRCO val": [q["relative_caption"] for q in json.loads((data / "benchmarks/circo/annotations/val.json").read_text())],
        "CIRR val": [q["caption"] for f in glob.glob(str(data / "benchmarks/cirr/**/cap.rc2.val.json"), recursive=True)
                     for q in json.loads(Path(f).read_text())],
        "FashionIQ val": [c for f in sorted(glob.glob(str(data / "benchmarks/fashioniq/captions/cap.*.val.json")))
                          for q in json.loads(Path(f).read_text()) for c in q["captions"]],
    }
    lines = []
    for name, texts in sets.items():
        texts = [t for t in texts if t and t.strip()]
        wrong = [t for t in texts if request_language(t) is not None]
        lines.append(f"- {name}: {len(wrong)} of {len(texts)} read as another language" + (f" (e.g. {wrong[:3]})" if wrong else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-mini", type=Path, default=COCO_MINI)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "data")
    parser.add_argument("--report", type=Path, help="print the table from the run folders here (cir-lang-*)")
    parser.add_argument("--misread", type=Path, help="count English requests read as another language (../shared/data)")
    args = parser.parse_args()
    if args.report or args.misread:
        print("\n\n".join(([report(args.report)] if args.report else []) + ([misread(args.misread)] if args.misread else [])))
        return
    dev = {query["id"]: query for query in json.loads((args.coco_mini / "cir_dev.json").read_text())}
    for column, language in enumerate(["en", *LANGUAGES]):
        queries = []
        for dev_id, texts in TRANSLATIONS.items():
            original = dev[dev_id]
            if original["relative_caption"] != texts[0]:
                raise SystemExit(f"dev query {dev_id} now reads {original['relative_caption']!r}, not {texts[0]!r}")
            queries.append({**original, "relative_caption": texts[column], "language": language,
                            "english": texts[0]})
        path = args.out / f"cir_lang_{language}.json"
        path.write_text(json.dumps(queries, indent=1, ensure_ascii=False) + "\n")
        print(f"{path}: {len(queries)} queries")


if __name__ == "__main__":
    main()
