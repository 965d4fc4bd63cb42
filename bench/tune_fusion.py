"""Choose the plan checks and the fusion's weights out of fold, and say what they are worth on
requests nobody tuned for.

Every query of the given sets runs through the graph once per plan-check variant (model replies from
the call cache: run `lensgraph eval` with the same models and prompts first), recording the
retrieval scores of the top k and each question's evidence; every fusion setting (verify weight,
margin, trust in questions about things the request does not name) is then scored from that record.
A setting is chosen by its worst phrasing family's gain over no LLM (ties: the mean gain), and each
query is scored by the setting chosen without it:

- grouped by reference image (5 folds; text-to-image queries by target image): no reference is in
  the folds that chose the setting and the fold scored with it;
- leave one phrasing family out: a family is scored by the setting the other families chose.

    python bench/tune_fusion.py --llm openai:qwen --llm-base-url http://127.0.0.1:18081/v1 \\
        --db /tmp/evaldb --out bench/runs/out-of-fold

writes OUT/summary.json (out-of-fold numbers only), OUT/report.json (every table: in-sample beside
out-of-fold, per check, per family, per fold) and prints the tables (`--report OUT/report.json`
prints them again). Tuning reads the dev sets only: coco-mini's dev split and the paraphrase sets
written from it (bench/paraphrases.py); the held-out split is never read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from lensgraph.graphs.evaluation import DEPTH, Evaluation  # noqa: E402
from lensgraph.graphs.runner import open_context, run_query  # noqa: E402
from paraphrases import COCO_MINI, dev_family  # noqa: E402
from lensgraph.pipeline.evaluation.compare import paired_difference  # noqa: E402
from lensgraph.pipeline.evaluation.crossval import group_folds, out_of_fold, select  # noqa: E402
from lensgraph.pipeline.evaluation.datasets import load_dataset  # noqa: E402
from lensgraph.pipeline.reasoning.evidence import question_trust, tally_verification  # noqa: E402
from lensgraph.pipeline.evaluation.metrics import average_precision_at_k, recall_at_k  # noqa: E402
from lensgraph.pipeline.reasoning.planning import CHECKS  # noqa: E402
from lensgraph.pipeline.settings import load_settings  # noqa: E402

SETS = {  # name: (dataset, annotation file or folder, task)
    "cir-dev": ("coco-mini-cir", None, "cir"),
    "cir-paraphrases": ("coco-mini-cir", ROOT / "bench" / "data" / "cir_paraphrases.json", "cir"),
    "t2i-dev": ("coco-mini-t2i", None, "t2i"),
    "t2i-typed": ("coco-mini-t2i", ROOT / "bench" / "data" / "t2i_typed.json", "t2i"),
}
CHECK_VARIANTS = {
    "all": CHECKS,
    "all - removal_in_reference": tuple(c for c in CHECKS if c != "removal_in_reference"),
    "all - request_objects": tuple(c for c in CHECKS if c != "request_objects"),
    "none": (),
}
WEIGHTS = (1.0, 2.0, 4.0, 8.0, 16.0)
MARGINS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 100.0)  # 100: no bound in effect
UNNAMED = (0.0, 0.25, 0.5, 1.0)
FOLDS = 5


@dataclass
class Record:
    """What one query's fusion needs: the top k by retrieval with their scores, the questions with
    P(yes) per candidate and whether the request names their thing, and the ranking below the top k."""

    order: list[str]
    scores: list[float]
    questions: list[dict[str, str]]
    p_yes: dict[str, list[float | None]]
    named: list[float]
    tail: list[str]


@dataclass
class Query:
    set: str
    family: str
    group: str
    task: str
    targets: tuple[str, ...]
    nollm: float = 0.0


def metric(task: str, ranking: list[str], targets: tuple[str, ...]) -> float:
    """The query's headline number in points: AP@5 for composed queries (CIRCO's mAP@5), R@1 for text-to-image."""
    return 100.0 * (average_precision_at_k(ranking, targets, 5) if task == "cir" else recall_at_k(ranking, targets, 1))


def capture(args: argparse.Namespace) -> tuple[list[Query], dict[str, list[Record]], dict[str, Any]]:
    settings = load_settings(clip="ViT-B-32:none", text_encoder="st:all-MiniLM-L6-v2", llm=args.llm,
                             llm_base_url=args.llm_base_url, db=args.db, stages="verify", k=args.k)
    queries: list[Query] = []
    records: dict[str, list[Record]] = {name: [] for name in CHECK_VARIANTS}
    base = None
    started = time.perf_counter()
    for name in args.sets.split(","):
        dataset, annotations, task = SETS[name]
        data = load_dataset(dataset, annotations or args.coco_mini, args.coco_mini)
        evaluation = Evaluation(settings, data, Path("/nonexistent"), "caption")
        searcher = evaluation.open_gallery()
        to_dataset, _ = evaluation._id_maps(searcher)
        base = base or open_context(evaluation.settings, searcher)
        ctx = replace(base, depth=DEPTH)
        for q in data.queries[: args.limit]:
            reference = str(data.images[q.reference]) if q.reference is not None else None
            family = q.extra.get("family") or (dev_family(q.text)[0] if task == "cir" else "dev: t2i")
            query = Query(name, family, q.reference or q.targets[0], task, q.targets)
            nollm = run_query(ctx.configured(stages="retrieve"), q.text, reference)
            query.nollm = metric(task, [to_dataset.get(i, i) for i in nollm["rankings"]["retrieve"]], q.targets)
            queries.append(query)
            for variant, checks in CHECK_VARIANTS.items():
                state = run_query(ctx.configured(plan_checks=",".join(checks) or "none", verify_weight=0.0), q.text, reference)
                uncached = sum(t["calls"] for t in state["trace"])
                if uncached and not args.allow_calls:
                    raise SystemExit(f"{name} {q.id}: {uncached} model call(s) missed the cache; run `lensgraph eval` first "
                                     "with the same models, or pass --allow-calls")
                retrieved = state["rankings"]["retrieve"]
                top = retrieved[: ctx.settings.k]
                by_id = {c["id"]: c["retrieval"] for c in state["candidates"]}
                probabilities = state.get("probabilities") or {}
                questions = state.get("questions") or []
                p_yes = {cid: [None if p is None else (p if qq["expected"] == "yes" else 1.0 - p) for p, qq in zip(ps, questions)]
                         for cid, ps in probabilities.items()}
                records[variant].append(Record(
                    order=[to_dataset.get(i, i) for i in top], scores=[by_id[i] for i in top], questions=questions,
                    p_yes={to_dataset.get(i, i): v for i, v in p_yes.items()},
                    named=question_trust(questions, q.text, ctx.mentions, 0.0),
                    tail=[to_dataset.get(i, i) for i in retrieved[ctx.settings.k: DEPTH]]))
        print(f"captured {name}: {len(data.queries[: args.limit])} queries ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return queries, records, {"k": args.k, "verifier": "captions", "mode": "caption"}


def fused_score(query: Query, record: Record, weight: float, margin: float, unnamed: float) -> float:
    if not record.questions or not record.p_yes:
        return metric(query.task, record.order + record.tail, query.targets)
    trust = [1.0 if n else unnamed for n in record.named]
    p_yes = {c: record.p_yes.get(c, [None] * len(record.questions)) for c in record.order}
    tally = tally_verification(record.order, record.scores, p_yes, record.questions, "fuse", weight, trust, margin)
    return metric(query.task, tally.order + record.tail, query.targets)


def settings_grid() -> list[dict[str, Any]]:
    return [{"plan_checks": v, "verify_weight": w, "verify_margin": m, "unnamed_trust": u}
            for v in CHECK_VARIANTS for w in WEIGHTS for m in MARGINS for u in UNNAMED]


def ci(diffs: np.ndarray, seed: int = 0) -> list[float]:
    """Paired 95% bootstrap CI of a mean difference (the same resampling as `lensgraph compare`)."""
    result = paired_difference({str(i): 0.0 for i in range(len(diffs))}, {str(i): float(d) / 100 for i, d in enumerate(diffs)}, seed=seed)
    return result["ci"]


def summary_of(diffs: np.ndarray) -> dict[str, Any]:
    return {"diff": round(float(diffs.mean()), 2), "ci": ci(diffs), "queries": int(len(diffs)),
            "worse": int((diffs < 0).sum()), "better": int((diffs > 0).sum())}


def analyse(queries: list[Query], scores: np.ndarray, grid: list[dict[str, Any]]) -> dict[str, Any]:
    baseline = np.array([q.nollm for q in queries])
    families = [q.family for q in queries]
    by_reference = group_folds([f"{q.task}:{q.group}" for q in queries], FOLDS)
    by_family = [sorted(set(families)).index(f) for f in families]
    oof_ref, chosen_ref = out_of_fold(scores, baseline, families, by_reference)
    oof_fam, chosen_fam = out_of_fold(scores, baseline, families, by_family)
    everything = np.ones(len(queries), dtype=bool)
    in_sample = select(scores, baseline, families, everything)
    sets = sorted({q.set for q in queries}, key=list(SETS).index)

    def rows(oof: np.ndarray) -> dict[str, Any]:
        out = {}
        for name in sets + sorted(set(families)):
            mask = np.array([q.set == name or q.family == name for q in queries])
            out[name] = {"in_sample": summary_of(scores[in_sample, mask] - baseline[mask]),
                         "out_of_fold": summary_of(oof[mask] - baseline[mask]),
                         "nollm": round(float(baseline[mask].mean()), 2),
                         "pipeline_out_of_fold": round(float(oof[mask].mean()), 2)}
        return out

    per_check = {}
    for variant in CHECK_VARIANTS:
        rows_of = [i for i, g in enumerate(grid) if g["plan_checks"] == variant]
        oof, _ = out_of_fold(scores[rows_of], baseline, families, by_reference)
        cir = np.array([q.set == "cir-dev" for q in queries])
        per_check[variant] = {"cir-dev": summary_of(oof[cir] - baseline[cir]),
                              "all": summary_of(oof - baseline)}
    return {
        "chosen_in_sample": grid[in_sample],
        "chosen_by_reference_fold": {str(f): grid[i] for f, i in chosen_ref.items()},
        "chosen_by_family_left_out": {sorted(set(families))[f]: grid[i] for f, i in chosen_fam.items()},
        "by_reference": rows(oof_ref),
        "by_family": rows(oof_fam),
        "per_check": per_check,
        "folds": FOLDS,
        "queries": len(queries),
        "settings_tried": len(grid),
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The owner's check: out-of-fold numbers only. cir / t2i: coco-mini dev grouped by reference
    (target) image; families: each phrasing family of dev and of the paraphrase sets, scored by the
    setting the other families chose (leave one family out)."""
    ref, fam = report["by_reference"], report["by_family"]
    families = {name: {k: row["out_of_fold"][k] for k in ("diff", "ci", "queries")}
                for name, row in fam.items() if name not in SETS}
    return {**{task: {k: ref[name]["out_of_fold"][k] for k in ("diff", "ci", "queries")}
               for task, name in (("cir", "cir-dev"), ("t2i", "t2i-dev")) if name in ref},
            "families": families,
            "schemes": {"cir, t2i": f"{report['folds']} folds grouped by reference image (text-to-image: target image)",
                        "families": "leave one phrasing family out"},
            "metric": "mAP@5 points for composed queries, R@1 points for text-to-image, over no LLM",
            "chosen": report["chosen_in_sample"]}


def fmt(s: dict[str, Any]) -> str:
    return f"{s['diff']:+.1f} [{s['ci'][0]:+.1f}, {s['ci'][1]:+.1f}]"


def print_report(report: dict[str, Any]) -> None:
    print(f"Chosen on all {report['queries']} queries (the new defaults): {json.dumps(report['chosen_in_sample'])}\n")
    for scheme, title in (("by_reference", f"{report['folds']} folds grouped by reference image"),
                          ("by_family", "leave one phrasing family out")):
        print(f"Out of fold, {title}: gain over no LLM (mAP@5 points for composed queries, R@1 for text-to-image), "
              "paired 95% bootstrap CI\n")
        print("| queries | n | no LLM | pipeline, out of fold | gain in sample | gain out of fold | better / worse (out of fold) |")
        print("|---|---|---|---|---|---|---|")
        for name, row in report[scheme].items():
            oof = row["out_of_fold"]
            print(f"| {name} | {oof['queries']} | {row['nollm']:.1f} | {row['pipeline_out_of_fold']:.1f} | "
                  f"{fmt(row['in_sample'])} | {fmt(oof)} | {oof['better']} / {oof['worse']} |")
        print()
    print("Each check variant, its fusion weights chosen out of fold (grouped by reference image):\n")
    print("| plan checks | cir-dev gain | all sets gain |")
    print("|---|---|---|")
    for variant, row in report["per_check"].items():
        print(f"| {variant} | {fmt(row['cir-dev'])} | {fmt(row['all'])} |")
    print("\nSettings chosen per reference fold:", json.dumps(report["chosen_by_reference_fold"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", default="openai:qwen")
    parser.add_argument("--llm-base-url", default="http://127.0.0.1:18081/v1")
    parser.add_argument("--db", type=Path, default=Path("/tmp/evaldb"))
    parser.add_argument("--coco-mini", type=Path, default=COCO_MINI)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of: {', '.join(SETS)}")
    parser.add_argument("--limit", type=int, help="the first N queries of each set (a quick look; not for RESULTS)")
    parser.add_argument("--allow-calls", action="store_true", help="let replies missing from the cache be asked for")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "runs" / "out-of-fold")
    parser.add_argument("--report", type=Path, help="print the tables of a report.json written before, and stop")
    args = parser.parse_args()
    if args.report:
        print_report(json.loads(args.report.read_text()))
        return
    queries, records, context = capture(args)
    grid = settings_grid()
    scores = np.array([[fused_score(q, records[g["plan_checks"]][i], g["verify_weight"], g["verify_margin"], g["unnamed_trust"])
                        for i, q in enumerate(queries)] for g in grid])
    report = {**analyse(queries, scores, grid), "context": context, "llm": args.llm,
              "command": "python bench/tune_fusion.py " + " ".join(sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (args.out / "summary.json").write_text(json.dumps(summary(report), indent=1, default=str) + "\n")
    with (args.out / "queries.jsonl").open("w") as f:
        for q in queries:
            f.write(json.dumps({"set": q.set, "family": q.family, "group": q.group, "nollm": q.nollm}) + "\n")
    print_report(report)


if __name__ == "__main__":
    main()
