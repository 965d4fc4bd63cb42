"""What one query costs where users run it: served seconds and tokens per stage, against a real
llama.cpp server on this machine, every model call uncached, and quality on the same queries.

Part 1, composed and text-to-image queries (coco-mini dev, caption mode, the default pipeline):
the Qwen2.5-Coder-0.5B GGUF (`bench/qwen_gguf.py`) served by llama-cpp-python with the flags the
README documents, started here on its own port; the first N composed and N text-to-image queries
run through the graph one after another (as a user asks them), after one warm-up query that puts
the prompt's fixed part into the server's KV cache. Per stage: p50/p90 seconds, prompt and
completion tokens (per query); per query: served seconds, and mAP@5 / R@1 against the preview
(the plain retrieval of the raw request, which is what no LLM gives).

Part 2, time to the first results on a 10,000-image index while the plan is being made: the graph
in this process (what `search --explain` prints first) and `POST /api/search/stream` on
`lensgraph serve` (the page's first grid), each with the same LLM planning behind it.

    python bench/query_latency.py --out bench/runs/query_latency/latency.json
    python bench/query_latency.py --report bench/runs/query_latency/latency.json

Everything but the output lives in a temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "bench", ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from qwen_gguf import DEFAULT_OUT as QWEN  # noqa: E402

COCO_MINI = ROOT.parent / "shared" / "data" / "coco-mini"
SERVER_FLAGS = ["--n_ctx", "4096", "--n_threads", "2", "--n_threads_batch", "2", "--interrupt_requests", "False"]


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start_llm(gguf: Path, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
               *SERVER_FLAGS]
    with log.open("w") as out:  # a file, not a pipe: the server writes a lot and would block on a full pipe
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama.cpp server exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).raise_for_status()
            return proc
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit("llama.cpp server did not answer within 180 s")


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else 0.0


def run_task(task: str, n: int, db: Path, url: str, coco: Path) -> dict[str, Any]:
    from lensgraph.graphs.evaluation import Evaluation
    from lensgraph.graphs.runner import open_context, stream_query
    from lensgraph.pipeline.evaluation.datasets import load_dataset
    from lensgraph.pipeline.evaluation.metrics import average_precision_at_k, recall_at_k
    from lensgraph.pipeline.settings import load_settings

    settings = load_settings(db=db, clip="ViT-B-32:none", text_encoder="st:all-MiniLM-L6-v2", llm="openai:qwen",
                             llm_base_url=url, no_cache=True)
    data = load_dataset(f"coco-mini-{task}", coco, coco)
    evaluation = Evaluation(settings, data, Path("/nonexistent"), "caption")
    gallery = evaluation.open_gallery()
    to_dataset, _ = evaluation._id_maps(gallery)
    ctx = open_context(evaluation.settings, gallery)
    queries = data.queries[: n + 1]
    per_stage: dict[str, dict[str, list[float]]] = {}
    served, first, quality, plain = [], [], [], []
    for number, q in enumerate(queries):
        reference = str(data.images[q.reference]) if q.reference is not None else None
        started = time.perf_counter()
        state: dict[str, Any] = {}
        preview: list[str] = []
        preview_at = None
        for stage, update, state in stream_query(ctx, q.text, reference):
            if stage == "preview":
                preview_at = time.perf_counter() - started
                preview = [to_dataset.get(i, i) for i in update["rankings"]["preview"]]
        seconds = time.perf_counter() - started
        if number == 0:
            continue  # the warm-up: the prompt's fixed part enters the server's cache
        served.append(seconds)
        first.append(preview_at or 0.0)
        final = [to_dataset.get(i, i) for i in state["rankings"][list(state["rankings"])[-1]]]
        score = (lambda r: 100 * average_precision_at_k(r, q.targets, 5)) if task == "cir" else (lambda r: 100 * recall_at_k(r, q.targets, 1))
        quality.append(score(final))
        plain.append(score(preview))
        for entry in state["trace"]:
            if entry.get("skipped"):
                continue
            row = per_stage.setdefault(entry["stage"], {"seconds": [], "prompt_tokens": [], "completion_tokens": [], "cached_tokens": []})
            row["seconds"].append(entry["seconds"])
            for key in ("prompt_tokens", "completion_tokens", "cached_tokens"):
                row[key].append(entry.get(key, 0))
        say(f"{task} {number}/{n}: {seconds:.1f} s")
    return {
        "median_served_s": round(statistics.median(served), 3),
        "p90_served_s": percentile(served, 90),
        "queries": len(served),
        "first_results_median_s": round(statistics.median(first), 3),
        "stages": {stage: {"p50_s": percentile(v["seconds"], 50), "p90_s": percentile(v["seconds"], 90),
                           "prompt_tokens": round(statistics.mean(v["prompt_tokens"]), 1),
                           "completion_tokens": round(statistics.mean(v["completion_tokens"]), 1),
                           "cached_tokens": round(statistics.mean(v["cached_tokens"]), 1)}
                   for stage, v in per_stage.items()},
        "quality": {"metric": "mAP@5" if task == "cir" else "R@1", "pipeline": round(statistics.mean(quality), 2),
                    "no_llm": round(statistics.mean(plain), 2)},
        "skipped": sorted({e["stage"] for e in state["trace"] if e.get("skipped")}),
    }


def first_results(tmp: Path, url: str, n: int, queries: int) -> dict[str, Any]:
    """Seconds from the request to the first ranking on an n-image index, the plan running behind it."""
    import httpx
    from api_speed import build_index, wait_ready
    from lensgraph.graphs.runner import stream_query
    from lensgraph.adapters.searcher import Searcher
    from local_servers import free_port
    from lensgraph.pipeline.settings import load_settings

    db, root = tmp / "big" / "chroma", tmp / "photos"
    root.mkdir(parents=True)
    build_index(db, root, n)
    settings = load_settings(db=db, index="bench", llm="openai:qwen", llm_base_url=url, stages="reason", no_cache=True, k=10)
    searcher = Searcher.open(settings)
    texts = [f"a {t} but at night" for t in ("red bicycle", "dog on a beach", "kitchen", "boat on a lake", "bus stop",
                                              "child with a kite", "plate of food", "snowy street")][:queries]
    cli, plan_done = [], []
    for text in ["warm-up"] + texts:
        started = time.perf_counter()
        events = stream_query(searcher.context.configured(stages="reason"), text)
        stage, _, _ = next(events)
        at = time.perf_counter() - started
        for _ in events:
            pass
        if text != "warm-up":
            assert stage == "preview"
            cli.append(at)
            plan_done.append(time.perf_counter() - started)
    port = free_port()
    command = [sys.executable, str(ROOT / "run.py"), "serve", "--db", str(db), "--index", "bench", "--root", str(root),
               "--port", str(port), "--llm", "openai:qwen", "--llm-base-url", url, "--stages", "reason", "--k", "10", "--no-cache"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LENSGRAPH_")}, "HF_HUB_OFFLINE": "1"}
    with (tmp / "serve.log").open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    web = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
            wait_ready(http, proc)
            for text in ["warm-up"] + texts:
                started = time.perf_counter()
                at = None
                with http.stream("POST", "/api/search/stream", data={"text": text, "k": "10"}) as answer:
                    answer.raise_for_status()
                    for line in answer.iter_lines():
                        if at is None and line.startswith("data:") and '"results": [' in line:
                            at = time.perf_counter() - started
                if text != "warm-up":
                    web.append(at)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return {"images": n, "queries": len(texts),
            "search_explain_first_ranking_median_s": round(statistics.median(cli), 3),
            "web_stream_first_grid_median_s": round(statistics.median(web), 3),
            "web_stream_first_grid_max_s": round(max(web), 3),
            "plan_finished_median_s": round(statistics.median(plan_done), 3)}


def prefilled(log: Path) -> dict[str, Any]:
    """What the server itself says it prefilled per request ("prompt eval time = ... / N tokens"):
    the prompt tokens it did not take from the previous request's KV state. llama-cpp-python does not
    report cached tokens in `usage`, so its log is where prefix reuse shows."""
    counts = [int(m) for m in re.findall(r"prompt eval time =\s+[\d.]+ ms /\s+(\d+) tokens", log.read_text())]
    return {"requests": len(counts), "median_prefilled_tokens": statistics.median(counts) if counts else None,
            "first_request_prefilled_tokens": counts[0] if counts else None}


def report(data: dict[str, Any]) -> None:
    print(f"Served by: {data['server']}\n")
    print("| task | queries | median served s | p90 served s | first results, median s | quality (pipeline / no LLM) |")
    print("|---|---|---|---|---|---|")
    for task in ("cir", "t2i"):
        t = data[task]
        q = t["quality"]
        print(f"| {task} | {t['queries']} | {t['median_served_s']:.2f} | {t['p90_served_s']:.2f} | "
              f"{t['first_results_median_s']:.2f} | {q['metric']} {q['pipeline']:.1f} / {q['no_llm']:.1f} |")
    print("\nPer stage (seconds p50 / p90; tokens per query, served):\n")
    print("| task | stage | p50 s | p90 s | prompt tokens | of them cached | completion tokens |")
    print("|---|---|---|---|---|---|---|")
    for task in ("cir", "t2i"):
        for stage, s in data[task]["stages"].items():
            print(f"| {task} | {stage} | {s['p50_s']:.2f} | {s['p90_s']:.2f} | {s['prompt_tokens']:.0f} | "
                  f"{s['cached_tokens']:.0f} | {s['completion_tokens']:.0f} |")
    skipped = sorted(set(data["cir"].get("skipped", [])) | set(data["t2i"].get("skipped", [])))
    if skipped:
        print(f"\nLeft out by default (the trace says why): {', '.join(skipped)}.")
    p = data.get("prefill")
    if p:
        print(f"\nPrefilled per request, from the server's log ({p['requests']} requests): the first "
              f"{p['first_request_prefilled_tokens']} tokens, then a median of {p['median_prefilled_tokens']:.0f}: the "
              "prompt's fixed part is read once and reused from the server's KV state.")
    f = data.get("first_results")
    if f:
        print(f"\nFirst results on a {f['images']:,}-image index while the plan runs ({f['queries']} queries): "
              f"`search --explain`'s first ranking {f['search_explain_first_ranking_median_s']:.3f} s (median), "
              f"the web stream's first grid {f['web_stream_first_grid_median_s']:.3f} s (median; max "
              f"{f['web_stream_first_grid_max_s']:.3f} s); the plan finished at {f['plan_finished_median_s']:.2f} s (median).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=QWEN)
    parser.add_argument("--coco-mini", type=Path, default=COCO_MINI)
    parser.add_argument("--n", type=int, default=30, help="queries of each task (after one warm-up)")
    parser.add_argument("--big", type=int, default=10_000, help="images in the first-results index (0: skip part 2)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--report", type=Path, help="print the tables of a latency.json written before, and stop")
    args = parser.parse_args()
    if args.report:
        report(json.loads(args.report.read_text()))
        return
    from local_servers import free_port

    if not args.gguf.is_file():
        raise SystemExit(f"{args.gguf} is missing: python bench/qwen_gguf.py")
    tmp = Path(tempfile.mkdtemp(prefix="lensgraph-latency-"))
    port = free_port()
    llm = start_llm(args.gguf, port, tmp / "llama-server.log")
    url = f"http://127.0.0.1:{port}/v1"
    try:
        data: dict[str, Any] = {
            "server": f"llama-cpp-python {_version('llama_cpp_python')}: python -m llama_cpp.server --model "
                      f"{args.gguf.name} {' '.join(SERVER_FLAGS)} (OMP_WAIT_POLICY=PASSIVE), one request at a time",
            "cir": run_task("cir", args.n, tmp / "db", url, args.coco_mini),
            "t2i": run_task("t2i", args.n, tmp / "db", url, args.coco_mini),
        }
        if args.big:
            data["first_results"] = first_results(tmp, url, args.big, 8)
        data["prefill"] = prefilled(tmp / "llama-server.log")
    finally:
        llm.terminate()
        llm.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1) + "\n")
    report(data)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
