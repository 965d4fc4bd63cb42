"""Comparing evaluation runs: metrics side by side, paired differences with uncertainty, and the
queries where runs disagree most (so a prompt change can be judged in minutes)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.evaluation.diagnostics import diagnostics
from lensgraph.pipeline.evaluation.metrics import query_scores


@dataclass
class Run:
    name: str
    path: Path
    definition: dict[str, Any]
    summary: dict[str, Any]
    records: dict[str, dict[str, Any]]

    @property
    def task(self) -> str:
        return self.definition.get("task", "cir")

    @property
    def final_stage(self) -> str:
        return list(self.summary["metrics"])[-1]

    def scores(self, metric: str, stage: str | None = None) -> dict[str, float]:
        """Per-query values of a metric after a stage (the run's last stage by default)."""
        stage = stage or self.final_stage
        out = {}
        for qid, r in self.records.items():
            values = query_scores({**r["truth"], "ranking": r.get("rankings", {}).get(stage, [])}, self.task)
            if r["truth"].get("targets") and metric in values:
                out[qid] = values[metric]
        return out


def load_run(path: str | Path) -> Run:
    from lensgraph.pipeline.evaluation.runfiles import read_records

    path = Path(path)
    if not (path / "metrics.json").is_file() or not (path / "run.json").is_file():
        raise LensgraphError(f"{path} is not a run folder (no metrics.json/run.json); write one with `lensgraph eval --out`.")
    return Run(
        name=path.name,
        path=path,
        definition=json.loads((path / "run.json").read_text()),
        summary=json.loads((path / "metrics.json").read_text()),
        records=read_records(path),
    )


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact binomial sign test on the non-tied pairs."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_difference(a: dict[str, float], b: dict[str, float], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean of b - a over the queries both scored (in points), a 95% bootstrap CI, and sign counts."""
    common = sorted(set(a) & set(b))
    diffs = np.array([100.0 * (b[q] - a[q]) for q in common])
    if len(diffs) == 0:
        return {"n": 0, "mean": 0.0, "ci": [0.0, 0.0], "wins": 0, "losses": 0, "ties": 0, "p_sign": 1.0}
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    wins, losses = int((diffs > 0).sum()), int((diffs < 0).sum())
    return {
        "n": len(common),
        "mean": round(float(diffs.mean()), 2),
        "ci": [round(float(np.percentile(means, 2.5)), 2), round(float(np.percentile(means, 97.5)), 2)],
        "wins": wins,
        "losses": losses,
        "ties": len(common) - wins - losses,
        "p_sign": round(sign_test_p(wins, losses), 4),
    }


def compare_runs(runs: list[Run], metric: str | None = None, top: int = 5) -> dict[str, Any]:
    if not runs:
        raise LensgraphError("Give at least one run folder.")
    tasks = {r.task for r in runs}
    if len(tasks) > 1:
        raise LensgraphError(f"These runs are of different tasks ({', '.join(sorted(tasks))}); compare like with like.")
    metric = metric or ("mAP@10" if runs[0].task == "cir" else "R@1")
    base = runs[0]
    differences = []
    for other in runs[1:]:
        diff = paired_difference(base.scores(metric), other.scores(metric))
        differences.append({"baseline": base.name, "run": other.name, "metric": metric,
                            "stage": f"{other.final_stage} vs {base.final_stage}", **diff})
    per_run = {r.name: r.scores(metric) for r in runs}
    common = sorted(set.intersection(*(set(s) for s in per_run.values())))
    spread = sorted(common, key=lambda q: (-(max(per_run[n][q] for n in per_run) - min(per_run[n][q] for n in per_run)), q))
    disagreements = []
    for qid in spread[:top] if len(runs) > 1 else []:
        record = base.records[qid]
        disagreements.append({
            "id": qid, "text": record.get("text"), "kind": record.get("kind"), "metric": metric,
            "runs": {r.name: {"score": 100.0 * per_run[r.name][qid], "descriptions": r.records[qid].get("descriptions"),
                              "warnings": r.records[qid].get("warnings")} for r in runs},
        })
    return {"metric": metric, "runs": {r.name: r.summary for r in runs}, "differences": differences,
            "diagnostics": {r.name: diagnostics(list(r.records.values()), list(r.summary["metrics"])) for r in runs},
            "disagreements": disagreements}


def headline_metrics(runs: list[Run]) -> list[str]:
    """The metrics the runs report, in their order, without per-kind breakdowns and counts."""
    return list(dict.fromkeys(
        k for r in runs for stage in r.summary["metrics"].values() for k in stage if ":" not in k and k not in ("n", "skipped")
    ))


def cost_until(summary: dict[str, Any], stage: str) -> dict[str, float]:
    """Model calls and seconds per query spent to produce the ranking after `stage` (the stages
    before it included, as they ran: caption, reason, retrieve, propose, verify, judge)."""
    total = {"calls": 0.0, "cache_hits": 0.0, "seconds": 0.0, "rounds": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0}
    for name, cost in summary.get("costs_per_query", {}).items():
        if name == "total":
            continue
        total = {key: total[key] + float(cost.get(key, 0.0)) for key in total}
        if name == stage:
            break
    return total


def served_seconds(run: Run, stage: str) -> float | None:
    """What the stages up to `stage` cost a query whose calls all reached the server: per stage, the
    mean seconds over the queries where that stage's calls were not cached (None: all were cached)."""
    total, seen = 0.0, False
    for name in run.summary.get("costs_per_query", {}):
        if name == "total":
            continue
        entries = [t for r in run.records.values() for t in r.get("trace", []) if t["stage"] == name]
        served = [t["seconds"] for t in entries if t.get("calls") and not t.get("cache_hits")]
        if any(t.get("calls") or t.get("cache_hits") for t in entries):  # a stage that calls models
            if not served:
                return None
            seen = True
        total += float(np.mean(served)) if served else float(np.mean([t["seconds"] for t in entries] or [0.0]))
        if name == stage:
            break
    return total if seen or total else 0.0


def markdown_table(runs: list[Run]) -> str:
    """One row per run and ranking stage, ready to paste into a report. "model calls" counts what the
    method asks of the models (answered by the server or by the cache); "s/query" is the wall time as
    measured (cached answers cost ~0), "s/query served" what a query costs when no answer is cached;
    "tokens/query served" the prompt + completion tokens of the calls the server answered in this run
    (blank for runs made before tokens were recorded)."""
    metrics = headline_metrics(runs)
    lines = ["| run | after stage | queries | " + " | ".join(metrics)
             + " | model calls/query | rounds/query | from cache | s/query | s/query served | tokens/query served |",
             "|---|---|---|" + "---|" * len(metrics) + "---|---|---|---|---|---|"]
    for r in runs:
        for stage, values in r.summary["metrics"].items():
            cells = ["" if values.get(m) is None else f"{values[m]:.1f}" for m in metrics]
            cost = cost_until(r.summary, stage)
            served = served_seconds(r, stage)
            lines.append(f"| {r.name} | {stage} | {values.get('n', r.summary.get('queries'))} | " + " | ".join(cells)
                         + f" | {cost['calls'] + cost['cache_hits']:.1f} | {cost['rounds']:.1f} | {cost['cache_hits']:.1f}"
                         + f" | {cost['seconds']:.1f} | {'' if served is None else f'{served:.1f}'} | {tokens(r.summary, cost)} |")
    return "\n".join(lines)


def tokens(summary: dict[str, Any], cost: dict[str, float]) -> str:
    recorded = any("prompt_tokens" in c for c in summary.get("costs_per_query", {}).values())
    return f"{cost['prompt_tokens']:.0f} + {cost['completion_tokens']:.0f}" if recorded else ""


def diagnostics_table(runs: list[Run], found: dict[str, dict[str, Any]]) -> str:
    """Stage diagnostics per run (pipeline/evaluation/diagnostics.py), as a markdown table."""
    lines = ["| run | plan: edits agree | plan: questions agree | plans fixed | verify AUC | verify accuracy "
             "| evidence correct / wrong | judge said yes | judge new rank 1 correct / wrong | first correct rank (median, per stage) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        d = found[r.name]
        plan, verify, judge = d.get("plan") or {}, d.get("verify") or {}, d.get("judge") or {}

        def pct(value: Any) -> str:
            return "" if value is None else f"{100 * value:.0f}%"

        ranks = ", ".join(f"{stage} {v['median']:g}" for stage, v in d.get("first_correct_rank", {}).items())
        evidence = f"{verify['evidence_correct']:.2f} / {verify['evidence_wrong']:.2f}" if verify else ""
        moved = f"{judge['new_rank1_correct']} / {judge['new_rank1_wrong']}" if judge else ""
        lines.append(
            f"| {r.name} | {pct(plan.get('edits'))} | {pct(plan.get('questions'))} | {plan.get('fixed_by_checks', '')} "
            f"| {verify.get('auc', '')} | {pct(verify.get('accuracy'))} | {evidence} | {pct(judge.get('said_yes'))} "
            f"| {moved} | {ranks} |")
    return "\n".join(lines)


def plot_runs(runs: list[Run], path: str | Path) -> Path:
    """One panel per metric: its value after each stage, one line per run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LensgraphError("--plot needs matplotlib: pip install 'lensgraph[eval]'.") from None
    metrics = headline_metrics(runs)
    cols = min(4, len(metrics)) or 1
    rows = math.ceil(len(metrics) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for r in runs:
            stages = list(r.summary["metrics"])
            ax.plot(stages, [r.summary["metrics"][s].get(metric, float("nan")) for s in stages], marker="o", label=r.name)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
