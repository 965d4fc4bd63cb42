"""Indexing speed and memory of `run.py index`, against a bare open_clip loop.

What is measured (CLIP with random weights, `ViT-B-32:none`, so speed only):

1. **Bare loop** (in this process): `open_clip.create_model_and_transforms('ViT-B-32',
   pretrained=None)`, then for each batch of 32 photos: PIL open + convert RGB + preprocess,
   serially, then `model.encode_image` under `torch.inference_mode()`. Model load is timed apart
   and excluded from its images/s. Decode+preprocess and model time are reported separately.
2. **CLI** (a real subprocess): `python run.py index DIR --clip ViT-B-32:none --db TMP --json`.
   Its JSON `report.seconds` starts inside `lensgraph.pipeline.ingest.indexing.index_folder`, i.e. after Python
   start-up, imports, opening Chroma and loading the model (run.py loads CLIP before calling
   `Searcher.add_folder`), so it excludes model load just like the bare loop; it does include
   reading the index's metadata, walking the folder, hashing and writing to Chroma. The
   subprocess wall clock (everything, start-up and model load included) is reported too.
3. **Re-run** of the CLI on the same folder and database (nothing changed): should skip every file
   by path + size + mtime without reading it.
4. **Peak RSS** of the indexing subprocess (`/usr/bin/time -v`, else `getrusage(RUSAGE_CHILDREN)`)
   for two gallery sizes: the coco-mini photos (367) and ~3x as many distinct files (each photo
   re-saved as JPEG at 3 qualities, so the content hashes differ and every file is embedded).
   Streaming indexing should keep memory flat as the gallery grows.

5. **ONNX bare loop**: the bare loop with the towers run by ONNX Runtime
   (`load_clip(spec, "cpu", "onnx")`, exported once to the lensgraph cache; an export made by this
   run is timed apart and excluded). It runs paired with the bare torch loop, batch by batch in
   turn, so both see the same load. And the **CLI with the onnx runtime**
   (`LENSGRAPH_CLIP_RUNTIME=onnx`) beside the CLI with `torch`.
6. **Model-only sweeps** on the same pre-decoded photos (so decoding is out of the picture):
   runtime (torch, onnx, int8-quantised onnx, `torch.compile`) x batch size (8/16/32/64) x threads
   (torch.set_num_threads and ONNX Runtime intra-op threads, 1 vs 2), interleaved chunk by chunk,
   `--repeat` times; plus decode+preprocess alone, serial vs 2 threads vs 2 processes.

Every ratio is against the bare torch loop of the same run. The device everything ran on is printed.

Photos: the 367 of ../shared/data/coco-mini (images/ and extra/, or $LENSGRAPH_COCO_MINI), used
through a temporary folder of symlinks. Everything is written under a temporary folder that is
removed at the end. No network is needed.

Run from the repository root (about 12 minutes on 2 cores, more with --repeat; `--quick` about 4):

    python bench/index_speed.py            # full
    python bench/index_speed.py --quick    # 64 photos, memory at 64 vs 192
    python bench/index_speed.py --repeat 2 # bare loops, CLIs and sweeps twice, alternating
    python bench/index_speed.py --no-sweep # skip the model-only sweeps

Other processes using the CPU make every number slower; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import OtherCpu  # noqa: E402

COCO = Path(os.environ.get("LENSGRAPH_COCO_MINI", ROOT.parent / "shared" / "data" / "coco-mini"))
CLIP_SPEC = "ViT-B-32:none"
TIME_BIN = Path("/usr/bin/time")


def coco_photos() -> list[Path]:
    photos = sorted((COCO / "images").glob("*.jpg")) + sorted((COCO / "extra").glob("*.jpg"))
    if not photos:
        raise SystemExit(f"No photos found under {COCO}/images and {COCO}/extra; set LENSGRAPH_COCO_MINI.")
    return photos


def symlink_folder(photos: list[Path], dest: Path) -> Path:
    dest.mkdir(parents=True)
    for p in photos:
        (dest / f"{p.parent.name}_{p.name}").symlink_to(p.resolve())
    return dest


def reencoded_folder(photos: list[Path], dest: Path, qualities: tuple[int, ...]) -> Path:
    """Each photo re-saved as JPEG at each quality: same pixels size, different bytes and hashes."""
    from PIL import Image

    dest.mkdir(parents=True)
    for p in photos:
        with Image.open(p) as im:
            rgb = im.convert("RGB")
        for q in qualities:
            rgb.save(dest / f"q{q}_{p.parent.name}_{p.name}", "JPEG", quality=q)
    return dest


# -- the bare loop --------------------------------------------------------------------------------


def paired_bare_loops(paths: list[Path], batch_size: int = 32) -> dict[str, dict]:
    """The bare torch loop and the same loop with lensgraph's ONNX towers, run batch by batch in
    turn (the order swapped every batch) so that a change in the machine's load hits both alike.
    Each batch: serial PIL open + convert + preprocess, then the image tower; decode and model are
    timed apart, model loads apart (excluded)."""
    import open_clip
    import torch
    from PIL import Image

    from lensgraph.pipeline.models.encoders import load_clip

    t0 = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.eval()
    torch_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    clip = load_clip(CLIP_SPEC, "cpu", "onnx")
    clip.towers.session("image")  # opening the session is part of loading
    onnx_load = time.perf_counter() - t0

    def torch_encode(x: torch.Tensor) -> None:
        with torch.inference_mode():
            model.encode_image(x).float().numpy()

    loops = {"bare": (preprocess, torch_encode, torch_load), "onnx": (clip.preprocess, clip.towers.image, onnx_load)}
    stats = {name: {"images": len(paths), "seconds": 0.0, "decode": 0.0, "encode": 0.0, "load": load, "busy": 0.0}
             for name, (_, _, load) in loops.items()}
    for i, b in enumerate(range(0, len(paths), batch_size)):
        for name in (("bare", "onnx") if i % 2 == 0 else ("onnx", "bare")):
            prep, encode, _ = loops[name]
            with OtherCpu() as others:
                t = time.perf_counter()
                tensors = []
                for p in paths[b : b + batch_size]:
                    with Image.open(p) as im:
                        tensors.append(prep(im.convert("RGB")))
                x = torch.stack(tensors)
                t2 = time.perf_counter()
                encode(x)
                t3 = time.perf_counter()
            st = stats[name]
            st["decode"] += t2 - t
            st["encode"] += t3 - t2
            st["seconds"] += t3 - t
            st["busy"] += others.cores * (t3 - t)
    for st in stats.values():
        st["others"] = st.pop("busy") / st["seconds"]
    return stats


def ensure_export() -> float | None:
    """Load the ONNX towers once; the seconds it took when this made the export, else None."""
    from lensgraph.pipeline.models.encoders import load_clip
    from lensgraph.pipeline.models.onnx_clip import MANIFEST, cache_root

    def manifests() -> dict[Path, int]:
        return {p: p.stat().st_mtime_ns for p in cache_root().glob(f"*/{MANIFEST}")}

    before = manifests()
    t0 = time.perf_counter()
    load_clip(CLIP_SPEC, "cpu", "onnx")
    seconds = time.perf_counter() - t0
    return seconds if manifests() != before else None


# -- model-only sweeps ------------------------------------------------------------------------------


def preprocessed(paths: list[Path]):
    import open_clip
    import torch
    from PIL import Image

    _, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    tensors = []
    for p in paths:
        with Image.open(p) as im:
            tensors.append(preprocess(im.convert("RGB")))
    return torch.stack(tensors)


def int8_towers(folder: Path, tmp: Path):
    """The cached fp32 image tower with its MatMul/Gemm weights quantised to int8 (ONNX Runtime's
    dynamic quantisation; this CPU has AVX-512 VNNI). Not equal to torch: measured for comparison."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from lensgraph.pipeline.models.onnx_clip import OnnxTowers

    (tmp / "int8").mkdir(exist_ok=True)
    quantize_dynamic(folder / "image.onnx", tmp / "int8" / "image.onnx", weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm"])
    return OnnxTowers(tmp / "int8", ["CPUExecutionProvider"], 2)


def model_sweep(x, repeat: int, compile_too: bool, tmp: Path) -> list[dict]:
    """Images/s of the image tower alone over the tensors `x`, per (runtime, batch, threads)."""
    import numpy as np
    import torch

    from lensgraph.pipeline.models.encoders import load_clip
    from lensgraph.pipeline.models.onnx_clip import OnnxTowers

    torch_clip = load_clip(CLIP_SPEC, "cpu", "torch")
    onnx_clip = load_clip(CLIP_SPEC, "cpu", "onnx")
    default_threads = torch.get_num_threads()
    onnx_by_threads = {t: OnnxTowers(onnx_clip.towers.folder, ["CPUExecutionProvider"], t) for t in (1, 2)}

    def torch_encode(batch):
        with torch.inference_mode():
            return torch_clip.model.encode_image(batch).numpy()

    encoders = {"torch": torch_encode, "onnx int8": int8_towers(onnx_clip.towers.folder, tmp).image}
    with torch.inference_mode():
        reference = torch_clip.model.encode_image(x[:32]).numpy()
    got = encoders["onnx int8"](x[:32])
    norm = np.linalg.norm
    int8_cosine = float(((got * reference).sum(1) / (norm(got, axis=1) * norm(reference, axis=1))).min())
    compile_seconds = None
    if compile_too:
        compiled = torch.compile(torch_clip.model.visual)

        def compiled_encode(batch):
            with torch.inference_mode():
                return compiled(batch).numpy()

        say("  compiling the image tower with torch.compile (batch 32) ...")
        t0 = time.perf_counter()
        compiled_encode(x[:32])
        compile_seconds = time.perf_counter() - t0
        encoders["torch.compile"] = compiled_encode
    configs = [(r, b, 2) for b in (8, 16, 32, 64) for r in ("torch", "onnx")]
    configs += [("torch", 32, 1), ("onnx", 32, 1), ("onnx int8", 32, 2)]
    if compile_too:
        configs += [("torch.compile", 32, 2)]

    def encoder(config: tuple):
        runtime, _, threads = config
        return onnx_by_threads[threads].image if runtime == "onnx" else encoders[runtime]  # int8: 2 threads

    for config in configs:  # warm-up: first-call allocations, each shape's compile
        torch.set_num_threads(config[2])
        encoder(config)(x[: config[1]])
    # Interleaved: every 64-image chunk goes through every config in turn (order rotated per
    # chunk), so load that comes and goes on a shared machine is spread over all of them.
    chunk = 64
    totals = {(c, r): [0, 0.0, 0.0] for c in configs for r in range(repeat)}  # images, seconds, others x seconds
    turn = 0
    for r in range(repeat):
        for start in range(0, len(x), chunk):
            part = x[start : start + chunk]
            turn += 1
            for config in configs[turn % len(configs):] + configs[: turn % len(configs)]:
                torch.set_num_threads(config[2])
                encode, batch_size = encoder(config), config[1]
                with OtherCpu() as others:
                    t0 = time.perf_counter()
                    for b in range(0, len(part), batch_size):
                        encode(part[b : b + batch_size])
                    seconds = time.perf_counter() - t0
                total = totals[(config, r)]
                total[0] += len(part)
                total[1] += seconds
                total[2] += others.cores * seconds
        for config in configs:
            images, seconds, busy = totals[(config, r)]
            say(f"  [{r + 1}/{repeat}] {config[0]:14s} batch {config[1]:2d} threads {config[2]}: "
                f"{images / seconds:5.1f} images/s (others {busy / seconds:.2f})")
    runs = {c: [(totals[(c, r)][0] / totals[(c, r)][1], totals[(c, r)][2] / totals[(c, r)][1]) for r in range(repeat)]
            for c in configs}
    torch.set_num_threads(default_threads)
    notes = {"torch.compile": f"compile {compile_seconds or 0:.0f}s", "onnx int8": f"min cosine to torch {int8_cosine:.5f}"}
    return [{"runtime": c[0], "batch": c[1], "threads": c[2], "runs": runs[c], "note": notes.get(c[0], "")}
            for c in configs]


def decode_sweep(paths: list[Path]) -> list[tuple[str, float, float]]:
    """Decode + preprocess alone (the indexer's own per-file work): serial, 2 threads, 2 processes.
    Processes are spawned (forking a process that runs torch/onnxruntime thread pools deadlocks)
    and warmed up first, so their start-up is excluded; their tensors come back pickled."""
    import multiprocessing
    from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

    def serial() -> Executor | None:
        return None

    makers = {
        "serial": serial,
        "2 threads": lambda: ThreadPoolExecutor(2),
        "2 processes (spawned)": lambda: ProcessPoolExecutor(
            2, mp_context=multiprocessing.get_context("spawn"), initializer=one_torch_thread),
    }
    rows = []
    for name, make in makers.items():
        pool = make()
        run = map if pool is None else pool.map
        list(run(decode_one, paths[:16]))  # warm-up: imports, worker start-up
        with OtherCpu() as others:
            t0 = time.perf_counter()
            for _ in run(decode_one, paths):
                pass
            seconds = time.perf_counter() - t0
            if pool is not None:
                pool.shutdown()  # inside: the workers' CPU is then ours (waited-for children), not "others"
        # A process pool's workers are reaped at shutdown with their start-up CPU, which OtherCpu then
        # subtracts from the window: their "others" reading is meaningless.
        busy = others.cores if not isinstance(pool, ProcessPoolExecutor) else float("nan")
        rows.append((name, len(paths) / seconds, busy))
        say(f"  decode+preprocess {name}: {len(paths) / seconds:.0f} images/s (others {busy:.2f})")
    return rows


_PREPROCESS = None


def one_torch_thread() -> None:
    """In a decode process: two processes x two torch threads would oversubscribe two cores."""
    import torch

    torch.set_num_threads(1)


def decode_one(path: Path):
    """What the indexer does per new file: read, hash, decode (EXIF, RGB, bomb check), preprocess."""
    global _PREPROCESS
    import open_clip

    from lensgraph.pipeline.images import decode_image, read_file, sha256_bytes

    if _PREPROCESS is None:  # once per process
        _PREPROCESS = open_clip.image_transform(224, is_train=False)
    data = read_file(path)
    sha256_bytes(data)
    return _PREPROCESS(decode_image(data, str(path), 100_000_000))


# -- the CLI --------------------------------------------------------------------------------------


def run_cli(folder: Path, db: Path, workdir: Path, runtime: str = "torch") -> dict:
    """One `run.py index` subprocess with this CLIP runtime; returns its JSON report, wall clock and
    peak RSS (MB)."""
    cmd = [sys.executable, str(ROOT / "run.py"), "index", str(folder), "--clip", CLIP_SPEC,
           "--db", str(db), "--index", "bench", "--json"]
    use_time = TIME_BIN.is_file() and os.access(TIME_BIN, os.X_OK)
    if use_time:
        cmd = [str(TIME_BIN), "-v", *cmd]
    # Settings from the flags only: no LENSGRAPH_* variables, no lensgraph.toml (cwd is a temp dir).
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENSGRAPH_")}
    # The runtime by variable: run.py has no --clip-runtime flag yet (Settings reads LENSGRAPH_*).
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", LENSGRAPH_CLIP_RUNTIME=runtime)
    with OtherCpu() as others:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env=env)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}")
    data = json.loads(proc.stdout)
    rss_mb = None
    if use_time:
        m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", proc.stderr)
        rss_mb = int(m.group(1)) / 1024 if m else None
    if rss_mb is None:  # max over all children so far: only a valid reading while it keeps growing
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = data["report"]
    return {
        "files": report["files"],
        "added": report["added"],
        "unchanged": report["unchanged"],
        "skipped": len(report["skipped"]),
        "seconds": report["seconds"],
        "wall": wall,
        "rss_mb": rss_mb,
        "indexed": data["index"]["images"],
        "others": others.cores,
    }


# -- output ---------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rate(run: dict) -> float:
    return run.get("images", run.get("added", 0)) / run["seconds"]


def device_line() -> str:
    import onnxruntime
    import torch

    from lensgraph.pipeline.models.encoders import resolve_device

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
    return (f"Ran on: {resolve_device('auto')} ({gpu}); {os.cpu_count()} cores; torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads; onnxruntime {onnxruntime.__version__} "
            f"({', '.join(onnxruntime.get_available_providers())}).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 photos; memory at 64 vs 192 files")
    parser.add_argument("--repeat", type=int, default=1, help="run the loops, the CLIs and the sweeps this many times, alternating")
    parser.add_argument("--no-sweep", action="store_true", help="skip the model-only sweeps")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the sweep (its compile takes ~1 min)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    photos = coco_photos()
    if args.quick:
        photos = photos[:64]
    qualities = (92, 85, 78)
    load_start = os.getloadavg()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="lensgraph-bench-index-"))
    try:
        gallery = symlink_folder(photos, tmp / "photos")
        say(f"{len(photos)} photos linked in {gallery}")
        say("making sure the ONNX export is cached (the first time: ~1 min) ...")
        exported = ensure_export()
        if exported:
            say(f"  exported in {exported:.0f}s (excluded from everything below)")

        runs: dict[str, list[dict]] = {"bare": [], "onnx": [], "cli-torch": [], "cli-onnx": []}
        rerun = None
        for r in range(args.repeat):
            steps = [("bare", "onnx"), ("cli-torch",), ("cli-onnx",)]
            for names in steps if r % 2 == 0 else reversed(steps):
                say(f"[run {r + 1}/{args.repeat}] {' + '.join(names)} over {len(photos)} photos ...")
                if names == ("bare", "onnx"):
                    pair = paired_bare_loops(photos)
                    runs["bare"].append(pair["bare"])
                    runs["onnx"].append(pair["onnx"])
                else:
                    runs[names[0]].append(run_cli(gallery, tmp / f"db-{names[0]}-{r}", tmp, names[0].split("-")[1]))
                for name in names:
                    x = runs[name][-1]
                    extra = f", wall {x['wall']:.1f}s, peak RSS {x['rss_mb']:.0f} MB" if "wall" in x else f", load {x['load']:.1f}s excluded"
                    say(f"  {name}: {rate(x):.1f} images/s{extra}; others' CPU {x['others']:.2f} cores")
                    if "added" in x and x["added"] != len(photos):
                        say(f"  WARNING: expected {len(photos)} added, got {x['added']} ({x['skipped']} skipped)")
            if r == 0:
                say("re-run of run.py index (onnx), nothing changed ...")
                rerun = run_cli(gallery, tmp / "db-cli-onnx-0", tmp, "onnx")
                say(f"  {rerun['added']} added, {rerun['unchanged']} unchanged in {rerun['seconds']:.2f}s (wall {rerun['wall']:.1f}s)")

        sweep = decode = None
        if not args.no_sweep:
            n = 64 if args.quick else 128
            say(f"model-only sweep over {n} pre-decoded photos ...")
            sweep = model_sweep(preprocessed(photos[:n]), args.repeat, not args.no_compile, tmp)
            say("decode + preprocess alone ...")
            decode = decode_sweep(photos)

        say(f"making {len(qualities)} re-encoded JPEG copies of each photo ...")
        copies = reencoded_folder(photos, tmp / "copies", qualities)
        n_copies = len(photos) * len(qualities)
        say(f"run.py index (onnx) over {n_copies} distinct files (fresh database) ...")
        big = run_cli(copies, tmp / "db_big", tmp, "onnx")
        say(f"  {big['added']} added in {big['seconds']:.1f}s (wall {big['wall']:.1f}s), peak RSS {big['rss_mb']:.0f} MB")

        print_results(args, photos, runs, rerun, sweep, decode, big, n_copies)
        print(f"Total {time.perf_counter() - started:.0f}s. Load average (1, 5, 15 min) at start "
              f"{', '.join(f'{x:.2f}' for x in load_start)}, at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}: "
              f"above ~1 means other processes shared the {os.cpu_count()} cores and the timings are pessimistic.")
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def print_results(args, photos, runs, rerun, sweep, decode, big, n_copies) -> None:
    def best(name: str) -> dict:
        return min(runs[name], key=lambda x: x["seconds"])

    def median_ratio(name: str) -> float:
        """Median over repeats of (this run's rate / the bare loop's rate in the same repeat)."""
        ratios = sorted(rate(a) / rate(b) for a, b in zip(runs[name], runs["bare"]))
        return ratios[len(ratios) // 2]

    bare = best("bare")
    bare_rate = rate(bare)

    def row(name: str, run: dict, key: str = "seconds", ratio: str | None = None) -> list[str]:
        images = run.get("images", run.get("added", 0))
        r = images / run[key]
        return [name, str(images), f"{run[key]:.2f}", f"{r:.1f}", ratio or f"{r / bare_rate:.2f}x", f"{run['others']:.2f}"]

    onnx, cli_t, cli_o = best("onnx"), best("cli-torch"), best("cli-onnx")
    rows = [
        row("bare open_clip loop (torch), serial decode (model load excluded)", bare),
        row("bare loop with the ONNX towers (onnxruntime), serial decode", onnx, ratio=f"{rate(onnx) / bare_rate:.2f}x (median {median_ratio('onnx'):.2f}x)"),
        row("`run.py index`, torch runtime: report.seconds", cli_t, ratio=f"{rate(cli_t) / bare_rate:.2f}x (median {median_ratio('cli-torch'):.2f}x)"),
        row("`run.py index`, onnx runtime: report.seconds", cli_o, ratio=f"{rate(cli_o) / bare_rate:.2f}x (median {median_ratio('cli-onnx'):.2f}x)"),
        row("`run.py index`, torch runtime: wall clock (start-up + model load included)", cli_t, "wall"),
        row("`run.py index`, onnx runtime: wall clock (start-up + model load included)", cli_o, "wall"),
        row(f"`run.py index`, onnx runtime: report.seconds, {n_copies} re-encoded files", big),
        ["re-run (onnx), nothing changed: report.seconds (files checked/s)", f"{rerun['files']} ({rerun['added']} added)",
         f"{rerun['seconds']:.2f}", f"{rerun['files'] / rerun['seconds']:.0f}", "-", f"{rerun['others']:.2f}"],
        ["re-run (onnx), nothing changed: subprocess wall clock", f"{rerun['files']} ({rerun['added']} added)",
         f"{rerun['wall']:.2f}", f"{rerun['files'] / rerun['wall']:.1f}", "-", f"{rerun['others']:.2f}"],
    ]
    print()
    print(f"### Indexing speed ({CLIP_SPEC}, batch 32, CLI workers by device: 2 on the CPU)")
    print()
    print(device_line())
    print()
    print(table(["method", "images", "seconds", "images/s", "ratio vs bare torch", "others' CPU (cores)"], rows))
    print()
    print("others' CPU: cores used by other processes on the machine during that measurement "
          f"(from /proc/stat); 0 = quiet, {os.cpu_count()} = every core shared, numbers pessimistic. "
          f"Best of {args.repeat} run(s); the median ratio is taken over the repeats, each against the bare loop of the same repeat.")
    print()
    if args.repeat > 1:
        print("All runs, images/s (others' CPU):")
        for name, label in (("bare", "bare torch"), ("onnx", "bare onnx"), ("cli-torch", "CLI torch"), ("cli-onnx", "CLI onnx")):
            print(f"- {label}:", ", ".join(f"{rate(x):.1f} ({x['others']:.2f})" for x in runs[name]))
        print()
    for name, run in (("torch", bare), ("ONNX", onnx)):
        print(f"Bare {name} loop breakdown: decode+preprocess {run['decode']:.1f}s "
              f"({run['images'] / run['decode']:.0f} images/s alone), model {run['encode']:.1f}s "
              f"({run['images'] / run['encode']:.1f} images/s alone); model load {run['load']:.1f}s (excluded).")
    cli_ratios = sorted(rate(o) / rate(t) for o, t in zip(runs["cli-onnx"], runs["cli-torch"]))
    print(f"`run.py index` onnx / torch, per repeat: {', '.join(f'{x:.2f}x' for x in cli_ratios)} "
          "(the two CLIs run one after the other, so a change of load between them shows here).")
    print(f"CLI time outside report.seconds (Python start-up, imports, Chroma open, model load, JSON): "
          f"torch {cli_t['wall'] - cli_t['seconds']:.1f}s, onnx {cli_o['wall'] - cli_o['seconds']:.1f}s, "
          f"onnx re-run {rerun['wall'] - rerun['seconds']:.1f}s.")
    print()

    if sweep:
        ref = next(x for x in sweep if x["runtime"] == "torch" and x["batch"] == 32 and x["threads"] == 2)

        def med(values: list[float]) -> float:
            return sorted(values)[len(values) // 2]

        ref_rate = med([v for v, _ in ref["runs"]])
        sweep_rows = [[
            x["runtime"] + (f" ({x['note']})" if x["note"] else ""), str(x["batch"]), str(x["threads"]),
            f"{med([v for v, _ in x['runs']]):.1f}", f"{med([v for v, _ in x['runs']]) / ref_rate:.2f}x",
            ", ".join(f"{v:.1f}" for v, _ in x["runs"]), f"{max(o for _, o in x['runs']):.2f}",
        ] for x in sweep]
        print("### Image tower alone (pre-decoded photos): runtime x batch size x threads")
        print()
        print(table(["runtime", "batch", "threads", "images/s (median)", "vs torch b32 t2", "all runs", "others' CPU (max)"], sweep_rows))
        print()
    verdict = (f"ONNX path vs bare torch loop: {median_ratio('onnx'):.2f}x (median over the paired repeats), "
               f"{'meeting' if median_ratio('onnx') >= 2 else 'below'} the 2x goal.")
    if sweep:
        fastest = max(sweep, key=lambda x: med([v for v, _ in x["runs"]]))
        equal = [x for x in sweep if x["runtime"] in ("torch", "onnx", "torch.compile")]
        fastest_equal = max(equal, key=lambda x: med([v for v, _ in x["runs"]]))
        verdict += (f" Fastest image tower measured: {fastest['runtime']} ({fastest['note'] or 'equal to torch'}) at "
                    f"{med([v for v, _ in fastest['runs']]) / ref_rate:.2f}x torch b32 t2; fastest equal to torch: "
                    f"{fastest_equal['runtime']} b{fastest_equal['batch']} t{fastest_equal['threads']} at "
                    f"{med([v for v, _ in fastest_equal['runs']]) / ref_rate:.2f}x.")
    print(verdict)
    print()
    if decode:
        print("### Decode + preprocess alone (read, hash, decode, preprocess: the indexer's per-file work)")
        print()
        print(table(["how", "images/s", "others' CPU (cores)"], [[n, f"{r:.0f}", "n/a" if o != o else f"{o:.2f}"] for n, r, o in decode]))
        print()

    cli0 = runs["cli-onnx"][0]
    mem_rows = [
        [f"{len(photos)} photos, torch runtime", str(runs["cli-torch"][0]["added"]), f"{runs['cli-torch'][0]['rss_mb']:.0f}",
         f"{runs['cli-torch'][0]['seconds']:.1f}", f"{runs['cli-torch'][0]['wall']:.1f}"],
        [f"{len(photos)} photos, onnx runtime", str(cli0["added"]), f"{cli0['rss_mb']:.0f}", f"{cli0['seconds']:.1f}", f"{cli0['wall']:.1f}"],
        [f"re-run of the {len(photos)} (onnx), nothing changed", str(rerun["added"]), f"{rerun['rss_mb']:.0f}",
         f"{rerun['seconds']:.2f}", f"{rerun['wall']:.1f}"],
        [f"{n_copies} re-encoded copies (onnx, distinct hashes)", str(big["added"]), f"{big['rss_mb']:.0f}",
         f"{big['seconds']:.1f}", f"{big['wall']:.1f}"],
    ]
    how = "/usr/bin/time -v" if TIME_BIN.is_file() else "getrusage(RUSAGE_CHILDREN)"
    print(f"### Peak RSS of the `run.py index` subprocess ({how})")
    print()
    print(table(["gallery", "added", "peak RSS (MB)", "report.seconds", "wall (s)"], mem_rows))
    growth = big["rss_mb"] - cli0["rss_mb"]
    print()
    print(f"{n_copies / len(photos):.1f}x the files: peak RSS {growth:+.0f} MB "
          f"({growth / max(n_copies - len(photos), 1) * 1024:+.1f} KB per extra image).")
    print()


if __name__ == "__main__":
    main()
