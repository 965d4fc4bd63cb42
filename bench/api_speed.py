"""Search latency through the web app's REST API vs the library in-process, on one index.

The index: N (10,000 by default) clustered, CLIP-like 512-d vectors (bench/search_speed.py's
`Distribution`), inserted through the library with `clip_spec="ViT-B-32:none"`, so text queries are
embedded by the real ViT-B-32 text tower with random weights (speed only; nothing is downloaded).
Image paths point under a --root folder (the files need not exist: results name them relative to it).

Measured, for the same text queries (retrieval stage only, k=10), as medians over the queries after
warm-up, interleaved query by query so a burst of other load falls on every path alike:
- `Searcher.retrieve(text, k)` in this process: CLIP text embedding + exact search + metadata;
- the graph in this process: `run_query` with stages=retrieve (LangGraph's caption + retrieve nodes);
- `POST /api/search` (stages=retrieve) on `lensgraph serve` in its own process, over HTTP on
  127.0.0.1 with a kept-alive connection: everything above plus HTTP, the multipart form, the
  boundary's checks and the JSON answer;
- `POST /api/search/stream`: time until the retrieval grid's event arrives.
Also checked: the REST answer's top-10 ids equal `Searcher.retrieve`'s, query by query.

    python bench/api_speed.py                 # 10k vectors, 40 queries (~2 minutes here)
    python bench/api_speed.py --n 2000 --queries 10

Everything lives under a temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, Path(__file__).resolve().parent, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))
from benchutil import OtherCpu  # noqa: E402
from search_speed import CLIP_SPEC, DIM, Distribution  # noqa: E402

K = 10
ADJECTIVES = ["red", "old", "small", "wet", "sunlit", "crowded", "empty", "wooden", "snowy", "blue"]
THINGS = ["bicycle against a brick wall", "dog on a beach", "kitchen with an oven", "street at night",
          "boat on a lake", "plate of food", "child flying a kite", "bus in the rain"]


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_index(db: Path, root: Path, n: int, seed: int = 0) -> None:
    from lensgraph.pipeline.store.index import GalleryIndex
    from lensgraph.pipeline.settings import load_settings

    settings = load_settings(db=db, index="bench")
    index = GalleryIndex.create_or_open(settings, clip_spec=CLIP_SPEC, clip_dim=DIM)
    dist, rng = Distribution("clustered", seed=seed), np.random.default_rng(seed + 1)
    started = time.perf_counter()
    for start in range(0, n, 5000):
        end = min(n, start + 5000)
        index.upsert_images([f"{i:064x}" for i in range(start, end)], dist.sample(end - start, rng),
                            [{"path": str(root / f"{i:06d}.jpg")} for i in range(start, end)])
    say(f"{n:,} vectors inserted in {time.perf_counter() - started:.0f} s")


def start_server(db: Path, root: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "run.py"), "serve", "--db", str(db), "--index", "bench", "--root", str(root),
               "--port", str(port), "--stages", "retrieve", "--k", str(K)]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LENSGRAPH_")}, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    say(proc.stdout.readline().strip())
    return proc


def wait_ready(http: httpx.Client, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"lensgraph serve exited: {proc.stderr.read()[-2000:]}")
        try:
            http.get("/api/index").raise_for_status()
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise SystemExit("lensgraph serve did not answer within 120 s")


def rest_search(http: httpx.Client, text: str) -> list[str]:
    answer = http.post("/api/search", data={"text": text, "k": str(K), "stages": "retrieve"})
    answer.raise_for_status()
    return [r["id"] for r in answer.json()["results"]]


def rest_first_grid(http: httpx.Client, text: str) -> None:
    with http.stream("POST", "/api/search/stream", data={"text": text, "k": str(K), "stages": "retrieve"}) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if line.startswith("data:") and '"results": [' in line:
                return
    raise RuntimeError("no ranking event in the stream")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/PID/stat), to leave the server out of "others"."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1000


def measure(n: int, queries: int, tmp: Path) -> tuple[dict[str, list[float]], int, float]:
    from lensgraph.adapters.searcher import Searcher
    from lensgraph.graphs.runner import run_query
    from local_servers import free_port
    from lensgraph.pipeline.settings import load_settings

    db, root = tmp / "db" / "chroma", tmp / "photos"
    root.mkdir(parents=True)
    build_index(db, root, n)
    texts = [f"a {a} {t}" for a, t in itertools.islice(itertools.product(ADJECTIVES, THINGS), queries)]
    searcher = Searcher.open(load_settings(db=db, index="bench", stages="retrieve", k=K))
    ctx = searcher.context_for(K, "retrieve")
    port = free_port()
    proc = start_server(db, root, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            wait_ready(http, proc)
            paths = {
                "Searcher.retrieve (in-process)": lambda q: searcher.retrieve(q, k=K),
                "graph run_query, stages=retrieve (in-process)": lambda q: run_query(ctx, q),
                "POST /api/search, stages=retrieve (HTTP)": lambda q: rest_search(http, q),
                "POST /api/search/stream: retrieval grid event (HTTP)": lambda q: rest_first_grid(http, q),
            }
            for fn in paths.values():  # warm-up: encoders, the vector matrix, connections
                for q in ("warm-up", "a warm-up query"):
                    fn(q)
            times: dict[str, list[float]] = {name: [] for name in paths}
            agree = 0
            server_cpu, started = cpu_seconds(proc.pid), time.monotonic()
            with OtherCpu() as others:
                for j, q in enumerate(texts):
                    names = list(paths) if j % 2 == 0 else list(reversed(paths))
                    for name in names:
                        times[name].append(timed(paths[name], q))
                    agree += [h.id for h in searcher.retrieve(q, k=K)] == rest_search(http, q)
                server_cores = (cpu_seconds(proc.pid) - server_cpu) / (time.monotonic() - started)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return times, agree, max(0.0, others.cores - server_cores)


def table(times: dict[str, list[float]], n: int, agree: int, others: float) -> str:
    base = statistics.median(next(iter(times.values())))
    queries = len(next(iter(times.values())))
    lines = [f"Search latency, retrieval only, k={K}, {n:,} clustered 512-d vectors, {queries} text queries "
             f"(CLIP ViT-B-32 text tower, random weights; other processes used {others:.2f} cores meanwhile)", "",
             "| path | median ms | p90 ms | vs in-process |", "|---|---:|---:|---:|"]
    for name, values in times.items():
        median = statistics.median(values)
        p90 = float(np.percentile(values, 90))
        lines.append(f"| {name} | {median:.1f} | {p90:.1f} | {median / base:.2f}x (+{median - base:.1f} ms) |")
    lines += ["", f"Top-{K} ids of the REST answer equal `Searcher.retrieve`'s for {agree}/{queries} queries."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="vectors in the index")
    parser.add_argument("--queries", type=int, default=40, help="text queries (at most 80)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lensgraph-api-bench-"))
    try:
        times, agree, others = measure(args.n, min(args.queries, 80), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(times, args.n, agree, others))


if __name__ == "__main__":
    main()
