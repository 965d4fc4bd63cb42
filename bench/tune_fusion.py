"""Sweep re-ranking parameters on a dev split in one process, from the call cache.

Every combination re-runs the graph on every query; the model calls come from the call cache
(run `lensgraph eval` with the same models and prompts first), so a sweep costs retrieval and
caption matching only. Prints one row per combination. Tuning belongs on the dev split: the
held-out split is for checking the chosen values, never for choosing them.

    python bench/tune_fusion.py --dataset coco-mini-cir --annotations C --images C \\
        --llm openai:qwen --llm-base-url http://127.0.0.1:18081/v1 --db /tmp/evaldb \\
        --grid verify_weight=0,1,2,4 --grid k=20,50 --grid matcher.midpoint=0.5,0.6 --set stages=verify

Grid names are the graph's Context fields (verify_weight, judge_weight, k, query_text, plan_checks as
all | none | a+b, ...) and the caption matcher's (matcher.midpoint, matcher.width).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphs.evaluation import DEPTH, Evaluation  # noqa: E402
from graphs.runner import open_context, run_query  # noqa: E402
from pipeline.datasets import load_dataset  # noqa: E402
from pipeline.metrics import summarize  # noqa: E402
from pipeline.planning import CHECKS  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402


def value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None}.get(text.lower(), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--annotations", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--mode", default="caption")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--set", action="append", default=[], help="NAME=VALUE: a fixed setting (repeatable)")
    parser.add_argument("--grid", action="append", default=[], help="NAME=V1,V2,...: a swept setting (repeatable)")
    parser.add_argument("--metrics", default="mAP@5,mAP@10,R@1,R@10")
    args, rest = parser.parse_known_args()
    fixed = dict(item.split("=", 1) for item in args.set)
    flags = {}  # the usual settings flags (--llm, --db, ...), as `lensgraph eval` takes them
    for flag, val in zip(rest[::2], rest[1::2]):
        flags[flag.lstrip("-").replace("-", "_")] = val
    grid = {name: [value(v) for v in values.split(",")] for name, values in (g.split("=", 1) for g in args.grid)}
    settings = load_settings(clip="ViT-B-32:none", text_encoder="st:all-MiniLM-L6-v2", **flags,
                             **{k: value(v) for k, v in fixed.items()})
    data = load_dataset(args.dataset, args.annotations, args.images)
    evaluation = Evaluation(settings, data, Path("/nonexistent"), args.mode)
    searcher = evaluation.open_searcher()
    to_dataset, _ = evaluation._id_maps(searcher)
    base = open_context(evaluation.settings, searcher)
    queries = data.queries[: args.limit] if args.limit else data.queries
    wanted = args.metrics.split(",")
    print("| " + " | ".join(list(grid) + wanted) + " |")
    print("|" + "---|" * (len(grid) + len(wanted)))
    for combo in itertools.product(*grid.values()):
        chosen = dict(zip(grid, combo))
        matcher = {k.removeprefix("matcher."): v for k, v in chosen.items() if k.startswith("matcher.")}
        fields = {k: v for k, v in chosen.items() if not k.startswith("matcher.")}
        if "plan_checks" in fields:  # all | none | a+b+c (commas separate grid values)
            name = fields["plan_checks"]
            fields["plan_checks"] = CHECKS if name == "all" else () if name == "none" else tuple(name.split("+"))
        ctx = replace(base, depth=DEPTH, **fields)
        if matcher:
            ctx = replace(ctx, matcher=replace(base.matcher, **matcher))
        rows, calls = [], 0
        for q in queries:
            reference = str(data.images[q.reference]) if q.reference is not None else None
            state = run_query(ctx, q.text, reference)
            calls += sum(t["calls"] for t in state["trace"])
            stage = list(state["rankings"])[-1]
            ranking = [to_dataset.get(i, i) for i in state["rankings"][stage]][:DEPTH]
            rows.append({"targets": list(q.targets), "target": q.extra.get("target"), "kind": q.kind,
                         "reference": q.reference, "ranking": ranking})
        metrics = summarize(rows, task=data.task)
        print("| " + " | ".join(str(c) for c in combo) + " | " + " | ".join(f"{metrics.get(m, float('nan')):.1f}" for m in wanted)
              + " |" + (f"  ({calls} uncached calls)" if calls else ""), flush=True)


if __name__ == "__main__":
    main()
