"""Search speed of a lensgraph gallery index, built from random vectors (no CLIP needed).

What is measured, at N = 10k and 100k 512-d L2-normalised float32 vectors, for two distributions:
- `uniform`: uniform on the sphere (normalised gaussians); the worst case for HNSW.
- `clustered`: CLIP-like; 100 random unit centres plus small anisotropic gaussian noise (a decaying
  spectrum, so the data has a low effective dimension like real embeddings), normalised. Queries
  are fresh draws from the same mixture.

The index is built through the library: `GalleryIndex.create_or_open(load_settings(db=TMP,
index=...), clip_spec="ViT-B-32:none", clip_dim=512)` and `upsert_images(ids, vectors, metadatas)`
(insert time is reported). Then, with `lensgraph.pipeline.store.retrieval.search(index, image_queries=q, k=10,
tau=0.0, exact_limit=...)`:
(a) the one-time load of every vector from Chroma into memory: the first exact search on a freshly
    opened index in this process, and `index.snapshots.matrix()` in a fresh subprocess;
(b) median latency over the queries (50 by default, each run REPEATS times, exact search and the
    brute forces interleaved in rotating order, the CPU caches evicted before each call so each starts
    as a query arriving after other work does: a 10k matrix fits in a 32 MB L3, and the call after
    another one over the same matrix would otherwise find it there) of exact search vs a numpy brute force
    `np.argpartition(-(M @ q), k)` + sort in the same process, and their ratio, twice: over the very
    matrix the search multiplies (column-major: the ratio is the search's own per-query overhead),
    and over the same vectors row-major, one row per image (how a numpy user holds them: the ratio
    a user sees against writing the brute force themselves);
(c) correctness: exact top-k ids equal each brute force's, query by query;
(d) the HNSW path (`exact_limit=0`: Chroma HNSW over-fetch + exact re-scoring): median latency and
    recall@10 against exact search;
(e) memory of loading the largest index, in a fresh subprocess: RSS before and after
    `index.snapshots.matrix()`, peak RSS (VmHWM; the child's ru_maxrss is also printed but includes the
    parent's RSS at fork), and the Python-heap peak (tracemalloc) of reading one page of vectors.
Also, to explain (b): medians of the pieces of one search, timed apart.

Run from the repository root (about 6-7 minutes on 2 cores, most of it inserting 2 x 100k vectors
into embedded Chroma; `--quick` is 10k only, well under a minute):

    python bench/search_speed.py
    python bench/search_speed.py --quick
    python bench/search_speed.py --sizes 10000 50000 --dists clustered
    python bench/search_speed.py --out bench/runs/search_speed/search_speed.json   # keep the measurements
    python bench/search_speed.py --report bench/runs/search_speed/search_speed.json  # their tables again

Everything is written under a temporary folder that is removed at the end. Other processes using
the CPU make every number slower; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import OtherCpu  # noqa: E402

DIM = 512
REPEATS = 5  # passes over the queries in (b)
K = 10
CLIP_SPEC = "ViT-B-32:none"
EVICT_BYTES = 128 * 2**20  # above twice any L3 of these machines (32 MB here)
INSERT_CHUNK = 5000  # rows per upsert_images call (for progress; the library splits by Chroma's max batch)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Distribution:
    """A reproducible source of gallery and query vectors."""

    def __init__(self, kind: str, seed: int = 0, centres: int = 100):
        self.kind = kind
        rng = np.random.default_rng(seed)
        if kind == "clustered":
            self.centres = normalise(rng.standard_normal((centres, DIM)))
            # Noise with a decaying spectrum (axis j has std ~ 1/sqrt(j+1)) in a random basis,
            # scaled so a point's cosine to its centre is about 0.8, as in CLIP galleries.
            basis, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
            scales = 1.0 / np.sqrt(np.arange(1, DIM + 1))
            scales *= 0.75 / np.linalg.norm(scales)
            self.noise = (scales[:, None] * basis.T).astype(np.float32)  # (DIM, DIM): z @ noise
        elif kind != "uniform":
            raise ValueError(kind)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((n, DIM), dtype=np.float32)
        for start in range(0, n, 20000):  # chunked to keep float64 temporaries small
            m = min(20000, n - start)
            z = rng.standard_normal((m, DIM), dtype=np.float32)
            if self.kind == "uniform":
                out[start : start + m] = normalise(z)
            else:
                which = rng.integers(0, len(self.centres), m)
                out[start : start + m] = normalise(self.centres[which] + z @ self.noise)
        return out


# -- memory probes --------------------------------------------------------------------------------


def proc_status_mb(field: str) -> float:
    """VmRSS (current) or VmHWM (peak) of this process from /proc/self/status, in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mb() -> float:
    return proc_status_mb("VmRSS")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def child_load(db: str, index_name: str) -> None:
    """In a fresh process: time and measure loading every vector of an index (prints JSON).

    Peak memory is VmHWM, not ru_maxrss: after fork+exec Linux carries the parent's RSS at fork
    time into the child's ru_maxrss, which would hide the child's own peak.
    """
    import tracemalloc

    from lensgraph.pipeline.store.index import GalleryIndex
    from lensgraph.pipeline.store.snapshot import PAGE
    from lensgraph.pipeline.settings import load_settings

    settings = load_settings(db=db, index=index_name)
    index = GalleryIndex.open(settings)
    count = index.count()
    before, hwm_before = rss_mb(), proc_status_mb("VmHWM")
    t0 = time.perf_counter()
    ids, matrix = index.snapshots.matrix("images")
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    matrix @ np.ones(matrix.shape[1], dtype=np.float32)  # first product: touches every page of a memory map
    first_product = time.perf_counter() - t0
    after, hwm_after = rss_mb(), proc_status_mb("VmHWM")
    matrix_mb = matrix.nbytes / 2**20
    # Python-heap peak of reading one page the way SnapshotCache.matrix() does (tracing the whole
    # load would take ~15x longer: every embedding arrives as a list of Python floats).
    tracemalloc.start()
    page = index.images.get(include=["embeddings"], limit=PAGE, offset=0)
    rows = np.asarray(page["embeddings"], dtype=np.float32)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({
        "count": count, "seconds": seconds, "first_product": first_product, "rss_before": before, "rss_after": after,
        "hwm_before": hwm_before, "hwm_after": hwm_after, "ru_maxrss_after": peak_rss_mb(),
        "matrix_mb": matrix_mb, "page_rows": len(rows), "page_traced_peak_mb": traced_peak / 2**20,
    }))


def run_child_load(db: Path, index_name: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENSGRAPH_")}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--_child-load", str(db), index_name],
        capture_output=True, text=True, env=env, cwd=db.parent,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit("child load failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- one benchmark case ---------------------------------------------------------------------------


@functools.cache
def _evict_buffer() -> np.ndarray:  # made on first use: not in the child that measures memory, nor for --report
    return np.ones(EVICT_BYTES // 4, dtype=np.float32)


def evict_caches() -> None:
    """Read a buffer twice the size of the last-level cache: whatever a call left there is gone."""
    _evict_buffer().sum()


def brute_force(matrix: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = matrix @ q
    part = np.argpartition(-scores, k)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def bench_case(tmp: Path, n: int, kind: str, queries: int, seed: int) -> dict:
    from lensgraph.pipeline.store.index import GalleryIndex
    from lensgraph.pipeline.store.retrieval import search
    from lensgraph.pipeline.settings import load_settings

    name = f"bench-{kind}-{n}"
    db = tmp / name
    settings = load_settings(db=db, index="bench")
    dist = Distribution(kind, seed=seed)
    rng = np.random.default_rng(seed + 1)
    index = GalleryIndex.create_or_open(settings, clip_spec=CLIP_SPEC, clip_dim=DIM)

    say(f"[{kind} {n:,}] inserting ...")
    t_insert = time.perf_counter()
    for start in range(0, n, INSERT_CHUNK):
        end = min(n, start + INSERT_CHUNK)
        vecs = dist.sample(end - start, rng)
        index.upsert_images(
            [f"{i:064x}" for i in range(start, end)], vecs, [{"path": f"/x/{i}.jpg"} for i in range(start, end)]
        )
        if end % 20000 == 0 or end == n:
            el = time.perf_counter() - t_insert
            say(f"  {end:,}/{n:,} inserted, {el:.0f}s ({end / el:.0f} vectors/s)")
    insert_seconds = time.perf_counter() - t_insert
    qs = dist.sample(queries, np.random.default_rng(seed + 2))

    # (a) first search on a freshly opened index: includes loading every vector from Chroma.
    index = GalleryIndex.open(settings, index.client)
    big = n + 1
    t0 = time.perf_counter()
    search(index, image_queries=qs[0], k=K, tau=0.0, exact_limit=big)
    first_search = time.perf_counter() - t0
    t0 = time.perf_counter()
    search(index, image_queries=qs[0], k=K, tau=0.0, exact_limit=big)
    second_search = time.perf_counter() - t0
    say(f"  first search (load) {first_search:.2f}s, second {second_search * 1000:.1f} ms")

    # (b) + (c) exact search vs brute force on the same matrix, interleaved query by query (their order
    # alternating) and repeated, so a burst of another process's load falls on both alike.
    ids, matrix = index.snapshots.matrix("images")
    row_major = np.ascontiguousarray(matrix)
    ms: dict[str, list[float]] = {"exact": [], "brute": [], "brute_rows": []}
    calls = {
        "exact": lambda q: search(index, image_queries=q, k=K, tau=0.0, exact_limit=big),
        "brute": lambda q: brute_force(matrix, q, K),
        "brute_rows": lambda q: brute_force(row_major, q, K),
    }
    got: dict[str, object] = {}
    exact_ids, agree, agree_rows = [], 0, 0
    others = OtherCpu().start()
    for rep in range(REPEATS):
        for j, q in enumerate(qs):
            turn = (j + rep) % 3
            for which in (list(calls)[turn:] + list(calls)[:turn]):
                evict_caches()
                t0 = time.perf_counter()
                out = calls[which](q)
                ms[which].append((time.perf_counter() - t0) * 1000)
                got[which] = out  # the previous result is freed here, outside the timing
                del out
            if rep == 0:
                hit_ids = [h.id for h in got["exact"]]
                agree += hit_ids == [ids[r] for r in got["brute"]]
                agree_rows += hit_ids == [ids[r] for r in got["brute_rows"]]
                exact_ids.append(hit_ids)
    exact_ms, brute_ms, brute_rows_ms = ms["exact"], ms["brute"], ms["brute_rows"]

    # Where exact-search time goes besides the matrix product (each piece timed on its own).
    def med_ms(fn, reps: int = 30) -> float:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    from lensgraph.pipeline.store.retrieval import top_k

    scores = matrix @ qs[0]
    pieces = {
        "snapshot": med_ms(index.snapshot),
        "matvec": med_ms(lambda: matrix @ qs[0]),
        "top_k": med_ms(lambda: top_k(scores, K)),
        "brute_top": med_ms(lambda: brute_force(matrix, qs[0], K)),
        "metadata": med_ms(lambda: index.metadata(exact_ids[0])),
    }

    # (d) HNSW over-fetch + exact re-scoring.
    search(index, image_queries=qs[0], k=K, tau=0.0, exact_limit=0)  # warm-up (loads the HNSW segment)
    hnsw_ms, recalls = [], []
    for q, want in zip(qs, exact_ids):
        t0 = time.perf_counter()
        hits = search(index, image_queries=q, k=K, tau=0.0, exact_limit=0)
        hnsw_ms.append((time.perf_counter() - t0) * 1000)
        recalls.append(len({h.id for h in hits} & set(want)) / K)
    others.stop()

    say("  loading in a fresh process, from Chroma, then from the file cache ...")
    shutil.rmtree(db / "lensgraph-vectors", ignore_errors=True)  # (a) filed it: start from Chroma again
    with OtherCpu() as others_load:
        child = run_child_load(db, "bench")
        child_cached = run_child_load(db, "bench")
    result = {
        "n": n, "kind": kind, "queries": len(qs), "insert_seconds": insert_seconds,
        "first_search": first_search, "second_search_ms": second_search * 1000,
        "exact_ms": statistics.median(exact_ms), "brute_ms": statistics.median(brute_ms),
        "brute_rows_ms": statistics.median(brute_rows_ms), "agree_rows": agree_rows,
        "exact_p90": float(np.percentile(exact_ms, 90)), "hnsw_ms": statistics.median(hnsw_ms),
        "agree": agree, "recall": float(np.mean(recalls)), "recall_min": float(np.min(recalls)),
        "child": child, "child_cached": child_cached, "db": db, "pieces": pieces, "others": others.cores, "others_load": others_load.cores,
    }
    say(f"  exact {result['exact_ms']:.2f} ms, brute {result['brute_ms']:.2f} ms "
        f"(row-major {result['brute_rows_ms']:.2f} ms), "
        f"hnsw {result['hnsw_ms']:.2f} ms, recall@10 {result['recall']:.3f}, exact==brute {agree}/{len(qs)}")
    del index, ids, matrix, row_major
    return result


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--_child-load":
        child_load(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 10k only")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="gallery sizes [10000 100000]")
    parser.add_argument("--dists", nargs="+", default=["uniform", "clustered"], choices=["uniform", "clustered"])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary databases")
    parser.add_argument("--out", type=Path, help="also write the measurements as JSON here")
    parser.add_argument("--report", type=Path, help="print the tables of a JSON file written by --out, run nothing")
    args = parser.parse_args()
    if args.report:
        report(json.loads(args.report.read_text()))
        return
    sizes = args.sizes or ([10_000] if args.quick else [10_000, 100_000])

    import chromadb

    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="lensgraph-bench-search-"))
    started = time.perf_counter()
    results = []
    try:
        rss_start = rss_mb()
        for n in sizes:
            for kind in args.dists:
                results.append(bench_case(tmp, n, kind, args.queries, args.seed))
                if not args.keep:
                    shutil.rmtree(results[-1]["db"], ignore_errors=True)
                results[-1]["db"] = str(results[-1]["db"])
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    data = {
        "command": "python bench/search_speed.py " + " ".join(sys.argv[1:]), "queries": args.queries,
        "cores": os.cpu_count(), "numpy": np.__version__, "chromadb": chromadb.__version__,
        "rss_start": rss_start, "peak_rss": peak_rss_mb(), "seconds": time.perf_counter() - started,
        "load_start": list(load_start), "load_end": list(os.getloadavg()), "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1) + "\n")
    report(data)


def report(data: dict) -> None:
    results, cores = data["results"], data["cores"]
    print()
    print(f"### Search speed (k={K}, {DIM}-d, {data['queries']} queries, {cores} cores, "
          f"numpy {data['numpy']}, chromadb {data['chromadb']})")
    print()
    print(f"Measured by `{data['command']}`.")
    print()
    rows = []
    for r in results:
        rows.append([
            f"{r['n']:,}", r["kind"], f"{r['insert_seconds']:.1f}", f"{r['first_search']:.2f}",
            f"{r['child']['seconds']:.2f}", f"{r['exact_ms']:.2f}", f"{r['brute_ms']:.2f}",
            f"{r['exact_ms'] / r['brute_ms']:.2f}x", f"{r['brute_rows_ms']:.2f}", f"{r['exact_ms'] / r['brute_rows_ms']:.2f}x",
            f"{r['agree']}/{r['queries']}, {r['agree_rows']}/{r['queries']}",
            f"{r['hnsw_ms']:.2f}", f"{r['recall']:.3f} (min {r['recall_min']:.1f})",
            f"{r['others']:.2f} / {r['others_load']:.2f}",
        ])
    print(table(
        ["N", "vectors", "insert (s)", "(a) first search, load incl. (s)", "(a) load in fresh process (s)",
         "(b) exact median (ms)", "(b) brute force, same matrix (ms)", "(b) exact / brute, same matrix",
         "(b) brute force, row-major (ms)", "(b) exact / brute, row-major", "(c) exact == brute, same / row-major",
         "(d) HNSW path median (ms)", "(d) HNSW recall@10 vs exact", "others' CPU, queries / load (cores)"],
        rows,
    ))
    print()
    print("others' CPU: cores used by other processes on the machine during the query loops (b-d) and "
          f"the fresh-process load (from /proc/stat); 0 = quiet, {cores} = every core shared.")
    print()
    print("Exact p90 latency (ms): " + ", ".join(f"{r['kind']} {r['n']:,}: {r['exact_p90']:.2f}" for r in results))
    print()

    print("Pieces of one exact search, timed apart (median ms): `index.snapshots.current()` (the cached view of one "
          "version), the matrix product, `top_k`, the whole brute force for comparison, "
          "and `index.metadata()` of the 10 hits (a Chroma read: only the HNSW path still makes it):")
    print()
    print(table(
        ["N", "vectors", "snapshot()", "matrix product", "top_k", "brute force", "metadata(10), HNSW path only"],
        [[f"{r['n']:,}", r["kind"]] + [f"{r['pieces'][p]:.3f}" for p in ("snapshot", "matvec", "top_k", "brute_top", "metadata")]
         for r in results],
    ))
    print()

    largest = max(results, key=lambda r: (r["n"], r["kind"] == "clustered"))
    c = largest["child"]
    print(f"### (e) Memory of loading {c['count']:,} vectors ({largest['kind']}) in a fresh process")
    print()
    print(table(
        ["measure", "MB"],
        [
            ["RSS after opening the index, before load (VmRSS)", f"{c['rss_before']:.0f}"],
            ["RSS after `index.snapshots.matrix()` (VmRSS)", f"{c['rss_after']:.0f}"],
            ["RSS growth", f"{c['rss_after'] - c['rss_before']:+.0f}"],
            ["peak RSS before load (VmHWM)", f"{c['hwm_before']:.0f}"],
            ["peak RSS after load (VmHWM)", f"{c['hwm_after']:.0f}"],
            ["transient during load (VmHWM after - VmRSS after)", f"{c['hwm_after'] - c['rss_after']:.0f}"],
            ["the float32 matrix itself (N x 512 x 4 B)", f"{c['matrix_mb']:.0f}"],
            [f"Python-heap peak reading one page of {c['page_rows']:,} rows (tracemalloc)", f"{c['page_traced_peak_mb']:.0f}"],
            ["ru_maxrss of the child (includes the parent's RSS at fork, see docstring)", f"{c['ru_maxrss_after']:.0f}"],
        ],
    ))
    print()
    print(f"Load time {c['seconds']:.2f}s ({c['count'] / c['seconds']:,.0f} vectors/s).")
    print()
    print("### (f) Loading in a fresh process: from Chroma vs from the file cache (`lensgraph-vectors/`)")
    print()
    print(table(
        ["N", "vectors", "from Chroma (s)", "from file cache (s)", "ratio", "first product after Chroma (ms)",
         "first product after file cache (ms)", "RSS growth Chroma / file (MB)"],
        [[f"{r['n']:,}", r["kind"], f"{r['child']['seconds']:.3f}", f"{r['child_cached']['seconds']:.3f}",
          f"{r['child']['seconds'] / max(r['child_cached']['seconds'], 1e-9):.0f}x",
          f"{r['child']['first_product'] * 1000:.1f}", f"{r['child_cached']['first_product'] * 1000:.1f}",
          f"{r['child']['rss_after'] - r['child']['rss_before']:+.0f} / {r['child_cached']['rss_after'] - r['child_cached']['rss_before']:+.0f}"]
         for r in results],
    ))
    print(f"This benchmark process: RSS {data['rss_start']:.0f} MB at start, peak {data['peak_rss']:.0f} MB "
          f"(includes generating and inserting the vectors). Total {data['seconds']:.0f}s.")
    print(f"Load average (1, 5, 15 min) at start {', '.join(f'{x:.2f}' for x in data['load_start'])}, at end "
          f"{', '.join(f'{x:.2f}' for x in data['load_end'])}: above ~1 means other processes shared the "
          f"{cores} cores and the timings are pessimistic.")




if __name__ == "__main__":
    main()
