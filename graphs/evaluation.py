"""Running a benchmark through the pipeline and writing a run folder.

RUN_DIR holds, written as the run goes:
- `run.json`: what defines the run (dataset, split, mode, stages, models, prompts); a rerun into
  the same folder must match it, and then resumes (finished queries are kept, model calls cached);
- `rankings.jsonl`: one line per finished query: its ranking after each stage (dataset image ids,
  top 50), ground truth, edits, descriptions, questions, verification matches, warnings, calls and
  seconds per stage, or the error that stopped it (such a query counts as a miss; never dropped);
- `metrics.json`: the metrics after each stage (one run gives the ablation table), costs per query;
- `manifest.json` and `prompts/`: settings, model ids, prompt files and hashes, git commit: the
  latest session's at the top level, every session's under "sessions";
- for a dataset with parts (FashionIQ's categories), one such folder per part, and at the top the
  run.json, and a metrics.json whose metrics are the mean over the parts.
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

from lensgraph.pipeline.evaluation.datasets import Dataset, Query
from lensgraph.pipeline.evaluation.diagnostics import diagnostics
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.files import atomic_write
from lensgraph.pipeline.gallery import Gallery
from lensgraph.pipeline.evaluation.metrics import check_ids, summarize
from lensgraph.pipeline.evaluation.runfiles import degraded, read_records
from lensgraph.pipeline.settings import RANKING_STAGES, Settings

log = logging.getLogger("lensgraph")

DEPTH = 50  # ranking depth kept per stage: the deepest standard cut-off (mAP@50, R@50, top-50 submissions)
Progress = Callable[[int, int], None]
COST_KEYS = ("calls", "cache_hits", "seconds", "rounds", "prompt_tokens", "completion_tokens", "cached_tokens")


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def run_queries(
    out: Path, queries: list[Query], run_one: Callable[[Query], dict[str, Any]], workers: int = 1,
    progress: Progress | None = None, redo_degraded: bool = False,
) -> None:
    """Run the queries without a record in OUT/rankings.jsonl, appending each record as it finishes."""
    done = read_records(out)
    if redo_degraded:
        done = {qid: r for qid, r in done.items() if not degraded(r)}
    # Rewrite what survived: a line torn by a kill must not swallow the next record appended. A temporary
    # file replaced in one step, so a kill during the rewrite loses nothing.
    for stale in out.glob(".rankings.jsonl.*.tmp"):  # left by a rewrite that was killed
        stale.unlink(missing_ok=True)
    atomic_write(out / "rankings.jsonl", lambda f: f.writelines(
        (json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8") for r in done.values()))
    todo = [q for q in queries if q.id not in done]
    finished = len(queries) - len(todo)
    if progress:
        progress(finished, len(queries))
    lock = threading.Lock()
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="lensgraph-eval") as pool:
        for future in as_completed([pool.submit(run_one, q) for q in todo]):
            record = future.result()
            with lock, (out / "rankings.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            finished += 1
            if progress:
                progress(finished, len(queries))


def stage_metrics(
    records: list[dict[str, Any]], task: str, recall_ks: tuple[int, ...] = ()
) -> dict[str, dict[str, float]]:
    """Metrics after each ranking stage. A stage a query did not reach (an error) scores as empty."""
    stages = [s for s in RANKING_STAGES if any(s in r.get("rankings", {}) for r in records)]
    out = {}
    for stage in stages:
        rows = [{**r["truth"], "ranking": r.get("rankings", {}).get(stage, []),
                 "subset_ranking": (r.get("subset_rankings") or {}).get(stage)} for r in records]
        out[stage] = summarize(rows, recall_ks or None, task=task)
    return out


def mean_of_parts(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage, each metric as the mean over the parts (FashionIQ reports the mean of its three
    categories, not a mean pooled over queries), and each part's own under "<part>:<metric>"."""
    stages = [s for s in RANKING_STAGES if all(s in p["metrics"] for p in summaries.values())]
    out: dict[str, dict[str, float]] = {}
    for stage in stages:
        per = {name: p["metrics"][stage] for name, p in summaries.items()}
        keys = [k for k in next(iter(per.values())) if ":" not in k and all(k in m for m in per.values())]
        row = {k: round(sum(m[k] for m in per.values()) / len(per), 2) for k in keys if k not in ("n", "skipped")}
        row["n"] = sum(m["n"] for m in per.values())
        row["skipped"] = sum(m["skipped"] for m in per.values())
        for name, m in per.items():
            row.update({f"{name}:{k}": v for k, v in m.items() if ":" not in k})
        out[stage] = row
    return out


def costs(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean model calls, seconds and served tokens per query, per stage and in total."""
    n = max(len(records), 1)
    per: dict[str, dict[str, float]] = {}
    for r in records:
        for t in r.get("trace", []):
            entry = per.setdefault(t["stage"], dict.fromkeys(COST_KEYS, 0.0))
            for key in entry:
                entry[key] += t.get(key, 0)
    result = {stage: {k: round(v / n, 3) for k, v in entry.items()} for stage, entry in per.items()}
    result["total"] = {k: round(sum(e[k] for e in result.values()), 3) for k in COST_KEYS}
    return result


def subset_rankings(state: dict[str, Any], to_dataset: dict[str, str]) -> dict[str, list[str]] | None:
    """Per ranking stage, the subset members (CIRR's img_set) in that stage's order over the whole
    gallery: those in the stage's ranking in its order, then the rest in retrieval order. Re-ranking
    only permutes the top-k, so this is exact."""
    order = state.get("subset_order")
    if not order:
        return None
    members = set(order)
    out = {}
    for stage, ranking in state.get("rankings", {}).items():
        ranked = [i for i in ranking if i in members]
        seen = set(ranked)
        ranked += [i for i in order if i not in seen]
        out[stage] = [to_dataset.get(i, i) for i in ranked]
    return out


def captions_source(dataset: Dataset, captions: Path | None) -> dict[str, Any] | None:
    """Where the gallery captions of caption mode come from, as data a rerun can compare."""
    import hashlib

    if captions is not None:
        return {"file": str(captions), "sha256": hashlib.sha256(Path(captions).read_bytes()).hexdigest()}
    if dataset.captions:
        text = json.dumps(sorted(dataset.captions.items()), ensure_ascii=False)
        return {"dataset": dataset.name, "sha256": hashlib.sha256(text.encode()).hexdigest()}
    return None  # the index's own (from `index --caption-with`), or none


class Evaluation:
    """One benchmark run into a run folder (for a dataset with parts, one sub-folder per part)."""

    tasks = ("cir", "t2i")
    wrong_task = "Chat benchmarks (visdial) run through lensgraph.graphs.chat_evaluation, not Evaluation."

    def __init__(
        self, settings: Settings, dataset: Dataset, out: Path, mode: str = "vision",
        keep_reference: bool | None = None, captions: Path | None = None,
    ):
        if mode not in ("vision", "caption"):
            raise LensgraphError(f"--mode is vision or caption, not {mode!r}.")
        if dataset.task not in self.tasks:
            raise LensgraphError(self.wrong_task)
        if mode == "caption":
            settings = settings.model_copy(update={"vlm": "caption", "judge": None, "captioner": None})
            if "tau" not in settings.model_fields_set:
                settings = settings.model_copy(update={"tau": 1.0})  # caption mode: the caption channel only
        if settings.index == "default":
            settings = settings.model_copy(update={"index": f"{dataset.name}-{dataset.split}".replace("_", "-")})
        self.settings, self.dataset, self.out, self.mode = settings, dataset, Path(out), mode
        self.keep_reference = dataset.keep_reference if keep_reference is None else keep_reference
        self.captions = captions
        self.captions_source = captions_source(dataset, captions)  # hashed once: definition() runs per check

    def definition(self, ctx=None) -> dict[str, Any]:
        """What the run's numbers depend on; a rerun into the folder must match it to append."""
        from lensgraph.pipeline.models.prompts import load_prompt_set

        definition: dict[str, Any] = {
            "dataset": self.dataset.name, "split": self.dataset.split, "task": self.dataset.task, "mode": self.mode,
            "reference": "kept" if self.keep_reference else "removed", "captions": self.captions_source,
            **self.settings.definition(),
            "prompts": load_prompt_set(self.settings.prompts).hashes(),
        }
        if self.dataset.parts:
            definition["parts"] = list(self.dataset.parts)
        if ctx is not None:
            definition["servers"] = {
                m.spec: {"backend": m.identity, "serves": m.served()} for m in ctx.models.all()
            }
        return definition

    def prepare_run_dir(self, definition: dict[str, Any], complete: bool = True) -> None:
        """Refuse a folder holding a different run; write the definition. An incomplete definition
        (before the models are built) is only checked on the keys it has, and not written."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "run.json"
        if path.is_file():
            previous = json.loads(path.read_text())
            keys = set(previous) | set(definition) if complete else set(definition)
            changed = sorted(k for k in keys if previous.get(k) != definition.get(k))
            if changed:
                shown = "; ".join(f"{k}: {previous.get(k)!r} then, {definition.get(k)!r} now" for k in changed)
                raise LensgraphError(
                    f"{self.out} holds a different run ({shown[:600]}). "
                    "Use a new --out folder, or delete this one to start over."
                )
        if complete:
            path.write_text(json.dumps(definition, indent=2))

    def open_gallery(self, progress: Progress | None = None) -> Gallery:
        from lensgraph.pipeline.ingest.indexing import read_captions_jsonl

        gallery = Gallery.open(self.settings, create=True)
        gallery.add_files(list(self.dataset.images.values()), progress=progress)
        entries = read_captions_jsonl(self.captions) if self.captions else [
            {"path": str(self.dataset.images[i]), "caption": c} for i, c in self.dataset.captions.items()
            if i in self.dataset.images
        ]
        if entries:
            gallery.import_captions(entries)
        elif self.mode == "caption" and gallery.index.captions is None:
            raise LensgraphError(
                "Caption mode needs gallery captions: --captions FILE, or index the gallery with --caption-with SPEC."
            )
        return gallery

    def run(
        self, workers: int = 1, limit: int | None = None, progress: Progress | None = None,
        index_progress: Progress | None = None, redo_degraded: bool = False,
    ) -> dict[str, Any]:
        """Run the queries not finished yet (the first `limit`; per part, for a dataset with parts)."""
        if self.dataset.parts:
            return self.run_parts(workers, limit, progress, index_progress, redo_degraded)
        from lensgraph.graphs.runner import open_context

        self.prepare_run_dir(self.definition(), complete=False)  # refuse a different run before indexing anything
        gallery = self.open_gallery(index_progress)
        to_dataset, to_index = self._id_maps(gallery)
        ctx = open_context(self.settings, gallery)
        ctx.depth = DEPTH
        ctx.keep_reference = self.keep_reference
        self.prepare_run_dir(self.definition(ctx))  # and one whose servers serve other models
        self._write_manifest(ctx)
        queries = self.dataset.queries[:limit] if limit else self.dataset.queries
        run_queries(self.out, queries, lambda q: self._run_query(ctx, q, to_dataset, to_index), workers, progress,
                    redo_degraded)
        return self.finish(queries)

    def run_parts(
        self, workers: int, limit: int | None, progress: Progress | None, index_progress: Progress | None,
        redo_degraded: bool,
    ) -> dict[str, Any]:
        """Each part against its own gallery and index, in its own sub-folder; the summary is the mean."""
        self.prepare_run_dir(self.definition())
        summaries = {}
        for name, part in self.dataset.parts.items():
            settings = self.settings.model_copy(update={"index": f"{self.settings.index}-{name}"})
            sub = Evaluation(settings, part, self.out / name, self.mode, self.keep_reference, self.captions)
            summaries[name] = sub.run(workers, limit, progress, index_progress, redo_degraded)
        return self.finish_parts(summaries)

    def finish_parts(self, summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
        records = list(read_records(self.out).values())
        summary = {
            "dataset": self.dataset.name, "split": self.dataset.split, "mode": self.mode,
            "parts": {name: {"queries": s["queries"], "metrics": s["metrics"]} for name, s in summaries.items()},
            "queries": sum(s["queries"] for s in summaries.values()),
            "errors": sum(s["errors"] for s in summaries.values()),
            "queries_with_warnings": sum(s["queries_with_warnings"] for s in summaries.values()),
            "metrics": mean_of_parts(summaries),
            "costs_per_query": costs(records),
        }
        summary["diagnostics"] = diagnostics(records, list(summary["metrics"]))
        (self.out / "metrics.json").write_text(json.dumps(summary, indent=2))
        return summary

    def finish(self, queries: list[Query]) -> dict[str, Any]:
        records = read_records(self.out)
        wanted = [records[q.id] for q in queries if q.id in records]
        try:
            unknown = check_ids((ids for r in wanted for ids in r.get("rankings", {}).values()), self.dataset.images,
                                str(self.out / "rankings.jsonl"))
        except ValueError as e:
            raise LensgraphError(f"{e}.") from None
        if unknown:
            log.warning("%s: %d ranked ids are not images of this dataset's gallery (an index shared with other "
                        "images?); they count as wrong answers", self.out, unknown)
        summary = {
            "dataset": self.dataset.name, "split": self.dataset.split, "mode": self.mode,
            "queries": len(wanted), "errors": sum(1 for r in wanted if r.get("error")),
            "queries_with_warnings": sum(1 for r in wanted if r.get("warnings")),
            "metrics": stage_metrics(wanted, self.dataset.task, self.dataset.recall_ks),
            "costs_per_query": costs(wanted),
        }
        summary["diagnostics"] = diagnostics(wanted, list(summary["metrics"]))
        (self.out / "metrics.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _id_maps(self, gallery: Gallery) -> tuple[dict[str, str], dict[str, str]]:
        by_path = {m.get("path"): i for i, m in gallery.index.all_metadata().items()}
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
        from lensgraph.graphs.runner import run_query

        truth = {"targets": list(query.targets), "target": query.extra.get("target"), "kind": query.kind,
                 "reference": query.reference, "subset": list(query.subset),
                 "aspects": list(query.extra.get("semantic_aspects") or ())}
        subset = [to_index[m] for m in query.subset if m in to_index]
        record: dict[str, Any] = {"id": query.id, "text": query.text, "kind": query.kind, "truth": truth}
        started = time.perf_counter()
        try:
            reference = None
            if query.reference is not None:
                if query.reference not in self.dataset.images:
                    raise LensgraphError(f"reference image {query.reference} is not in the gallery folder")
                reference = str(self.dataset.images[query.reference])
            state = run_query(ctx, query.text, reference, subset)
        except Exception as e:  # one query's failure is recorded and counted, the run goes on
            log.warning("query %s failed: %s", query.id, e)
            record.update(error=f"{type(e).__name__}: {e}", rankings={}, trace=[], seconds=round(time.perf_counter() - started, 3))
            return record
        def by_dataset_id(values: dict[str, Any] | None) -> dict[str, Any] | None:
            return {to_dataset.get(i, i): v for i, v in (values or {}).items()} or None

        record.update(
            rankings={s: [to_dataset.get(i, i) for i in ids][:DEPTH] for s, ids in state.get("rankings", {}).items()},
            caption=state.get("caption"),
            translation=state.get("translation"),
            edits=state.get("edits"),
            descriptions=state.get("descriptions"),
            questions=state.get("questions"),
            matches=by_dataset_id(state.get("matches")),
            probabilities=by_dataset_id(state.get("probabilities")),
            verdicts=by_dataset_id({i: {"verdict": v.get("verdict"), "p_yes": v.get("p_yes")}
                                    for i, v in (state.get("verdicts") or {}).items()}),
            subset_rankings=subset_rankings(state, to_dataset),
            fixes=[f for t in state.get("trace", []) for f in t.get("fixes", [])] or None,
            trace=[{k: t.get(k, 0) for k in ("stage", "seconds", "calls", "cache_hits", "rounds", "failures")}
                   for t in state.get("trace", [])],
            warnings=[w for t in state.get("trace", []) for w in t.get("warnings", [])],
            seconds=round(time.perf_counter() - started, 3),
        )
        return record

    def _write_manifest(self, ctx) -> None:
        from lensgraph.graphs.runner import Manifest

        prompts_dir = self.out / "prompts"
        prompts_dir.mkdir(exist_ok=True)
        for stage, prompt in ctx.prompts.prompts.items():
            shutil.copyfile(prompt.source, prompts_dir / f"{stage}.txt")
            if prompt.schema is not None:
                (prompts_dir / f"{stage}.schema.json").write_text(json.dumps(prompt.schema, indent=2) + "\n")
        session = {
            **Manifest.common(self.settings, ctx),
            "git_commit": git_commit(),
            "run": self.definition(ctx),
            "dataset": {"name": self.dataset.name, "split": self.dataset.split, "queries": len(self.dataset.queries),
                        "gallery": len(self.dataset.images)},
        }
        # One entry per session of the run, oldest first: a resumed run says what each part was made with.
        path = self.out / "manifest.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        sessions = previous.get("sessions") or ([previous] if previous else [])
        manifest = {**session, "sessions": [*sessions, {k: v for k, v in session.items() if k != "sessions"}]}
        (self.out / "manifest.json").write_text(json.dumps(manifest, indent=2))
