"""Chat benchmarks (VisDial with ChatIR's protocol) through the chat graph, round by round.

Each dialogue is one thread: round 0 sends the caption, each later round one "question? answer"
turn; after every round the thread's current ranking is kept. Hits@10 is cumulative over rounds
(ChatIR eval.py), against the benchmark's search space (the 50k images of Search_Space_val_50k).
Without an LLM the turns are joined with ", " as ChatIR's text retrievers read the dialogue; with
one, the chat prompt rewrites the target description every round.

The run folder is that of `lensgraph.graphs.evaluation` (run.json, rankings.jsonl with one ranking per round,
metrics.json with "Hits@10@r0" ... under the "retrieve" stage, manifest.json); it resumes the same way.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from lensgraph.graphs.evaluation import Evaluation, costs, run_queries
from lensgraph.pipeline.evaluation.datasets import Query
from lensgraph.pipeline.evaluation.metrics import CHAT_K, summarize
from lensgraph.pipeline.evaluation.runfiles import read_records

log = logging.getLogger("lensgraph")

DEPTH = 50  # results kept per round


class ChatEvaluation(Evaluation):
    tasks = ("chat",)
    wrong_task = "Not a chat benchmark: composed and text-to-image benchmarks run through lensgraph.graphs.evaluation."

    def definition(self, ctx=None) -> dict[str, Any]:
        definition = super().definition(ctx)
        for key in ("mode", "reference", "captions", "k"):  # no reference or caption file; k is DEPTH
            definition.pop(key, None)
        definition["depth"] = DEPTH
        return definition

    def run(
        self, workers: int = 1, limit: int | None = None, progress=None, index_progress=None,
        redo_degraded: bool = False,
    ) -> dict[str, Any]:
        from langgraph.checkpoint.memory import InMemorySaver

        from lensgraph.graphs.chat import build_chat_graph
        from lensgraph.graphs.runner import open_context

        self.prepare_run_dir(self.definition(), complete=False)
        gallery = self.open_gallery(index_progress)
        to_dataset, _ = self._id_maps(gallery)
        ctx = open_context(self.settings, gallery)
        ctx = ctx.configured(k=max(ctx.settings.k, DEPTH))
        self.prepare_run_dir(self.definition(ctx))
        self._write_manifest(ctx)
        chat_graph = build_chat_graph(InMemorySaver())  # a thread per dialogue, kept only for this run
        queries = self.dataset.queries[:limit] if limit else self.dataset.queries
        run_queries(self.out, queries, lambda q: self._run_dialogue(chat_graph, ctx, q, to_dataset), workers, progress,
                    redo_degraded)
        return self.finish(queries)

    def _run_dialogue(self, chat_graph, ctx, query: Query, to_dataset: dict[str, str]) -> dict[str, Any]:
        from lensgraph.graphs.chat import send

        truth = {"targets": list(query.targets), "target": query.extra.get("target"), "kind": query.kind}
        record: dict[str, Any] = {"id": query.id, "text": query.text, "truth": truth, "rounds": len(query.dialogue),
                                  "rankings": {"retrieve": []}, "descriptions": [], "trace": []}
        started = time.perf_counter()
        thread = f"eval-{query.id}-{time.time_ns()}"
        try:
            for message in query.dialogue:
                state = send(chat_graph, ctx, thread, message)
                record["rankings"]["retrieve"].append([to_dataset.get(c["id"], c["id"]) for c in state["candidates"]][:DEPTH])
                record["descriptions"].append(state.get("description"))
                record["trace"] += [{k: t.get(k, 0) for k in ("stage", "seconds", "calls", "cache_hits", "rounds", "failures")}
                                    for t in state.get("trace", [])]
        except Exception as e:  # one dialogue's failure is recorded (its remaining rounds count as misses)
            log.warning("dialogue %s failed: %s", query.id, e)
            record["error"] = f"{type(e).__name__}: {e}"
        record["warnings"] = []
        record["seconds"] = round(time.perf_counter() - started, 3)
        return record

    def finish(self, queries: list[Query]) -> dict[str, Any]:
        records = read_records(self.out)
        wanted = [records[q.id] for q in queries if q.id in records]
        # a round a failed dialogue did not reach counts as a miss (an empty ranking), as in ChatIR
        rows = [{**r["truth"], "rankings": r["rankings"]["retrieve"] + [[]] * (r["rounds"] - len(r["rankings"]["retrieve"]))}
                for r in wanted]
        summary = {
            "dataset": self.dataset.name, "split": self.dataset.split, "mode": self.mode,
            "queries": len(wanted), "errors": sum(1 for r in wanted if r.get("error")),
            "queries_with_warnings": 0,
            "metrics": {"retrieve": summarize(rows, (CHAT_K,), task="chat")},
            "costs_per_query": costs(wanted),
        }
        (self.out / "metrics.json").write_text(json.dumps(summary, indent=2))
        return summary
