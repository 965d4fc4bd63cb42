"""Running a benchmark through the pipeline and writing a run folder.

RUN_DIR holds, written as the run goes:
- `run.json`: what defines the run (dataset, split, mode, stages, models, prompts); a rerun into
  the same folder must match it, and then resumes (finished queries are kept, model calls cached);
- `rankings.jsonl`: one line per finished query: its ranking after each stage (dataset image ids,
  top 50), ground truth, edits, descriptions, questions, verification matches, warnings, calls and
  seconds per stage, or the error that stopped it (such a query counts as a miss; never dropped);
- `metrics.json`: the metrics after each stage (one run gives the ablation table), costs per query;
- `manifest.json` and `prompts/`: settings, model ids, prompt files and hashes, git commit.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from pipeline.datasets import Dataset, Query
from pipeline.diagnostics import diagnostics
from pipeline.errors import LensgraphError
from pipeline.metrics import summarize
from pipeline.settings import Settings

log = logging.getLogger("lensgraph")

RANKING_STAGES = ("retrieve", "verify", "judge")
DEPTH = 50  # ranking depth kept per stage: the deepest standard cut-off (mAP@50, R@50, top-50 submissions)
Progress = Callable[[int, int], None]


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def read_records(out: Path) -> dict[str, dict[str, Any]]:
    """Finished queries of a run folder, by query id (a torn last line from a kill is ignored)."""
    path = out / "rankings.jsonl"
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[record["id"]] = record
    return records


def degraded(record: dict[str, Any]) -> bool:
    """A query that failed, or where a model call failed for good and a stage fell back (a server
    outage, say): `--redo-degraded` runs these again."""
    if record.get("error") or any(t.get("failures") for t in record.get("trace", [])):
        return True
    return any("gave up after" in w for w in record.get("warnings") or [])  # records written before "failures"


def stage_metrics(records: list[dict[str, Any]], task: str) -> dict[str, dict[str, float]]:
    """Metrics after each ranking stage. A stage a query did not reach (an error) scores as empty."""
    stages = [s for s in RANKING_STAGES if any(s in r.get("rankings", {}) for r in records)]
    out = {}
    for stage in stages:
        rows = [{**r["truth"], "ranking": r.get("rankings", {}).get(stage, [])} for r in records]
        out[stage] = summarize(rows, task=task)
    return out


def costs(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean model calls and seconds per query, per stage and in total."""
    n = max(len(records), 1)
    per: dict[str, dict[str, float]] = {}
    for r in records:
        for t in r.get("trace", []):
            entry = per.setdefault(t["stage"], {"calls": 0.0, "cache_hits": 0.0, "seconds": 0.0, "rounds": 0.0})
            for key in entry:
                entry[key] += t.get(key, 0)
    result = {stage: {k: round(v / n, 3) for k, v in entry.items()} for stage, entry in per.items()}
    result["total"] = {k: round(sum(e[k] for e in result.values()), 3) for k in ("calls", "cache_hits", "seconds", "rounds")}
    return result


class Evaluation:
    """One benchmark run into a run folder."""

    def __init__(self, settings: Settings, dataset: Dataset, out: Path, mode: str = "vision"):
        if mode not in ("vision", "caption"):
            raise LensgraphError(f"--mode is vision or caption, not {mode!r}.")
        if dataset.task == "chat":
            raise LensgraphError("Chat benchmarks (visdial) run with `lensgraph chat`; `eval` covers CIR and T2I for now.")
        if mode == "caption":
            settings = settings.model_copy(update={"vlm": "caption", "judge": None, "captioner": None})
            if "tau" not in settings.model_fields_set:
                settings = settings.model_copy(update={"tau": 1.0})  # caption mode: the caption channel only
        if settings.index == "default":
            settings = settings.model_copy(update={"index": f"{dataset.name}-{dataset.split}".replace("_", "-")})
        self.settings, self.dataset, self.out, self.mode = settings, dataset, Path(out), mode
        self._lock = threading.Lock()

    def definition(self) -> dict[str, Any]:
        from pipeline.prompts import load_prompt_set

        s = self.settings
        return {
            "dataset": self.dataset.name, "split": self.dataset.split, "task": self.dataset.task, "mode": self.mode,
            "stages": s.resolved_stages, "llm": s.llm, "vlm": s.vlm, "captioner": s.captioner, "judge": s.judge,
            "k": s.k, "alpha": s.alpha, "tau": s.tau, "verify_batch": s.verify_batch, "query_text": s.query_text,
            "query_weight": s.query_weight,
            "verifier": s.resolved_verifier, "rerank": s.rerank, "verify_weight": s.verify_weight, "judge_weight": s.judge_weight,
            "judge_mode": s.judge_mode, "plan_checks": list(s.resolved_plan_checks),
            "prompts": load_prompt_set(s.prompts).hashes(), "index": s.index,
        }

    def prepare_run_dir(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "run.json"
        definition = self.definition()
        if path.is_file():
            previous = json.loads(path.read_text())
            changed = sorted(k for k in set(previous) | set(definition) if previous.get(k) != definition.get(k))
            if changed:
                raise LensgraphError(
                    f"{self.out} holds a different run (differs in: {', '.join(changed)}). "
                    "Use a new --out folder, or delete this one to start over."
                )
        path.write_text(json.dumps(definition, indent=2))

    def open_searcher(self, progress: Progress | None = None, captions: Path | None = None):
        from pipeline.indexing import read_captions_jsonl
        from pipeline.searcher import Searcher

        searcher = Searcher.open(self.settings, create=True)
        searcher.add_files(list(self.dataset.images.values()), progress=progress)
        entries = read_captions_jsonl(captions) if captions else [
            {"path": str(self.dataset.images[i]), "caption": c} for i, c in self.dataset.captions.items()
            if i in self.dataset.images
        ]
        if entries:
            searcher.import_captions(entries)
        elif self.mode == "caption" and searcher.index.captions is None:
            raise LensgraphError(
                "Caption mode needs gallery captions: --captions FILE, or index the gallery with --caption-with SPEC."
            )
        return searcher

    def run(
        self, workers: int = 1, limit: int | None = None, progress: Progress | None = None,
        index_progress: Progress | None = None, captions: Path | None = None, redo_degraded: bool = False,
    ) -> dict[str, Any]:
        from graphs.runner import open_context

        self.prepare_run_dir()
        searcher = self.open_searcher(index_progress, captions)
        to_dataset, to_index = self._id_maps(searcher)
        ctx = open_context(self.settings, searcher)
        ctx.depth = DEPTH
        self._write_manifest(ctx)
        queries = self.dataset.queries[:limit] if limit else self.dataset.queries
        done = read_records(self.out)
        if redo_degraded:
            done = {qid: r for qid, r in done.items() if not degraded(r)}
        # Rewrite what survived: a line torn by a kill must not swallow the next record appended. A temporary
        # file replaced in one step, so a kill during the rewrite loses nothing.
        partial = self.out / "rankings.jsonl.partial"
        partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done.values()), encoding="utf-8")
        os.replace(partial, self.out / "rankings.jsonl")
        todo = [q for q in queries if q.id not in done]
        finished = len(queries) - len(todo)
        if progress:
            progress(finished, len(queries))
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="lensgraph-eval") as pool:
            futures = [pool.submit(self._run_query, ctx, q, to_dataset, to_index) for q in todo]
            for future in as_completed(futures):
                record = future.result()
                with self._lock, (self.out / "rankings.jsonl").open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                finished += 1
                if progress:
                    progress(finished, len(queries))
        return self.finish(queries)

    def finish(self, queries: list[Query]) -> dict[str, Any]:
        records = read_records(self.out)
        wanted = [records[q.id] for q in queries if q.id in records]
        summary = {
            "dataset": self.dataset.name, "split": self.dataset.split, "mode": self.mode,
            "queries": len(wanted), "errors": sum(1 for r in wanted if r.get("error")),
            "queries_with_warnings": sum(1 for r in wanted if r.get("warnings")),
            "metrics": stage_metrics(wanted, self.dataset.task),
            "costs_per_query": costs(wanted),
        }
        summary["diagnostics"] = diagnostics(wanted, list(summary["metrics"]))
        (self.out / "metrics.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _id_maps(self, searcher) -> tuple[dict[str, str], dict[str, str]]:
        import os

        by_path = {m.get("path"): i for i, m in searcher.index.all_metadata().items()}
        to_index = {}
        for did, path in self.dataset.images.items():
            iid = by_path.get(os.path.abspath(path))
            if iid is not None:
                to_index[did] = iid
        to_dataset: dict[str, str] = {}
        for did, iid in to_index.items():
            to_dataset.setdefault(iid, did)  # identical files share one index id
        return to_dataset, to_index

    def _run_query(self, ctx, query: Query, to_dataset: dict[str, str], to_index: dict[str, str]) -> dict[str, Any]:
        from graphs.runner import run_query

        truth = {"targets": list(query.targets), "target": query.extra.get("target"), "kind": query.kind,
                 "reference": query.reference, "subset": list(query.subset)}
        record: dict[str, Any] = {"id": query.id, "text": query.text, "kind": query.kind, "truth": truth}
        started = time.perf_counter()
        try:
            reference = None
            if query.reference is not None:
                if query.reference not in self.dataset.images:
                    raise LensgraphError(f"reference image {query.reference} is not in the gallery folder")
                reference = str(self.dataset.images[query.reference])
            state = run_query(ctx, query.text, reference)
        except Exception as e:  # one query's failure is recorded and counted, the run goes on
            log.warning("query %s failed: %s", query.id, e)
            record.update(error=f"{type(e).__name__}: {e}", rankings={}, trace=[], seconds=round(time.perf_counter() - started, 3))
            return record
        def by_dataset_id(values: dict[str, Any] | None) -> dict[str, Any] | None:
            return {to_dataset.get(i, i): v for i, v in (values or {}).items()} or None

        record.update(
            rankings={s: [to_dataset.get(i, i) for i in ids][:DEPTH] for s, ids in state.get("rankings", {}).items()},
            caption=state.get("caption"),
            edits=state.get("edits"),
            descriptions=state.get("descriptions"),
            questions=state.get("questions"),
            matches=by_dataset_id(state.get("matches")),
            probabilities=by_dataset_id(state.get("probabilities")),
            verdicts=by_dataset_id({i: {"verdict": v.get("verdict"), "p_yes": v.get("p_yes")}
                                    for i, v in (state.get("verdicts") or {}).items()}),
            fixes=[f for t in state.get("trace", []) for f in t.get("fixes", [])] or None,
            trace=[{k: t.get(k, 0) for k in ("stage", "seconds", "calls", "cache_hits", "rounds", "failures")}
                   for t in state.get("trace", [])],
            warnings=[w for t in state.get("trace", []) for w in t.get("warnings", [])],
            seconds=round(time.perf_counter() - started, 3),
        )
        return record

    def _write_manifest(self, ctx) -> None:
        from graphs.runner import Manifest

        prompts_dir = self.out / "prompts"
        prompts_dir.mkdir(exist_ok=True)
        for stage, prompt in ctx.prompts.prompts.items():
            shutil.copyfile(prompt.source, prompts_dir / f"{stage}.txt")
            if prompt.schema is not None:
                (prompts_dir / f"{stage}.schema.json").write_text(json.dumps(prompt.schema, indent=2) + "\n")
        manifest = {
            **Manifest.common(self.settings, ctx),
            "git_commit": git_commit(),
            "run": self.definition(),
            "dataset": {"name": self.dataset.name, "split": self.dataset.split, "queries": len(self.dataset.queries),
                        "gallery": len(self.dataset.images)},
        }
        (self.out / "manifest.json").write_text(json.dumps(manifest, indent=2))
