"""Indexing speed and memory of `run.py index`, against a bare open_clip loop.

What is measured (CLIP with random weights, `ViT-B-32:none`, so speed only):

1. **Bare loop** (in this process): `open_clip.create_model_and_transforms('ViT-B-32',
   pretrained=None)`, then for each batch of 32 photos: PIL open + convert RGB + preprocess,
   serially, then `model.encode_image` under `torch.inference_mode()`. Model load is timed apart
   and excluded from its images/s. Decode+preprocess and model time are reported separately.
2. **CLI** (a real subprocess): `python run.py index DIR --clip ViT-B-32:none --db TMP --json`.
   Its JSON `report.seconds` starts inside `pipeline.indexing.index_folder`, i.e. after Python
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

Photos: the 367 of ../shared/data/coco-mini (images/ and extra/, or $LENSGRAPH_COCO_MINI), used
through a temporary folder of symlinks. Everything is written under a temporary folder that is
removed at the end. No network is needed.

Run from the repository root (about 4 minutes on 2 cores; `--quick` about 1 minute):

    python bench/index_speed.py            # full
    python bench/index_speed.py --quick    # 64 photos, memory at 64 vs 192
    python bench/index_speed.py --repeat 2 # bare loop and CLI twice, alternating

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


def bare_loop(paths: list[Path], batch_size: int = 32) -> dict[str, float]:
    import open_clip
    import torch
    from PIL import Image

    t0 = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.eval()
    load = time.perf_counter() - t0

    decode = encode = 0.0
    with OtherCpu() as others:
        start = time.perf_counter()
        for b in range(0, len(paths), batch_size):
            t = time.perf_counter()
            tensors = []
            for p in paths[b : b + batch_size]:
                with Image.open(p) as im:
                    tensors.append(preprocess(im.convert("RGB")))
            x = torch.stack(tensors)
            t2 = time.perf_counter()
            with torch.inference_mode():
                feats = model.encode_image(x)
            feats.float().numpy()
            t3 = time.perf_counter()
            decode += t2 - t
            encode += t3 - t2
        seconds = time.perf_counter() - start
    del model
    return {"images": len(paths), "seconds": seconds, "load": load, "decode": decode, "encode": encode,
            "others": others.cores}


# -- the CLI --------------------------------------------------------------------------------------


def run_cli(folder: Path, db: Path, workdir: Path) -> dict:
    """One `run.py index` subprocess; returns its JSON report, wall clock and peak RSS (MB)."""
    cmd = [sys.executable, str(ROOT / "run.py"), "index", str(folder), "--clip", CLIP_SPEC,
           "--db", str(db), "--index", "bench", "--json"]
    use_time = TIME_BIN.is_file() and os.access(TIME_BIN, os.X_OK)
    if use_time:
        cmd = [str(TIME_BIN), "-v", *cmd]
    # Settings from the flags only: no LENSGRAPH_* variables, no lensgraph.toml (cwd is a temp dir).
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENSGRAPH_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 photos; memory at 64 vs 192 files")
    parser.add_argument("--repeat", type=int, default=1, help="run the bare loop and the CLI this many times, alternating")
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

        bare_runs, cli_runs = [], []
        rerun = None
        for r in range(args.repeat):
            say(f"[run {r + 1}/{args.repeat}] bare open_clip loop over {len(photos)} photos ...")
            bare_runs.append(bare_loop(photos))
            b = bare_runs[-1]
            say(f"  {b['images'] / b['seconds']:.1f} images/s (model load {b['load']:.1f}s excluded; others' CPU {b['others']:.2f} cores)")
            say(f"[run {r + 1}/{args.repeat}] run.py index (fresh database) ...")
            db = tmp / f"db{r}"
            cli_runs.append(run_cli(gallery, db, tmp))
            c = cli_runs[-1]
            say(f"  {c['added']} added in {c['seconds']:.1f}s (wall {c['wall']:.1f}s), peak RSS {c['rss_mb']:.0f} MB; others' CPU {c['others']:.2f} cores")
            if c["added"] != len(photos):
                say(f"  WARNING: expected {len(photos)} added, got {c['added']} ({c['skipped']} skipped)")
            if r == 0:
                say("re-run of run.py index, nothing changed ...")
                rerun = run_cli(gallery, db, tmp)
                say(f"  {rerun['added']} added, {rerun['unchanged']} unchanged in {rerun['seconds']:.2f}s (wall {rerun['wall']:.1f}s)")

        say(f"making {len(qualities)} re-encoded JPEG copies of each photo ...")
        copies = reencoded_folder(photos, tmp / "copies", qualities)
        n_copies = len(photos) * len(qualities)
        say(f"run.py index over {n_copies} distinct files (fresh database) ...")
        big = run_cli(copies, tmp / "db_big", tmp)
        say(f"  {big['added']} added in {big['seconds']:.1f}s (wall {big['wall']:.1f}s), peak RSS {big['rss_mb']:.0f} MB")

        import torch

        # -- speed table
        def best(runs: list[dict], key: str) -> dict:
            return min(runs, key=lambda x: x[key])

        bare = best(bare_runs, "seconds")
        bare_rate = bare["images"] / bare["seconds"]
        cli = best(cli_runs, "seconds")
        rows = []

        def row(name: str, images: int, seconds: float, others: float) -> list[str]:
            rate = images / seconds if seconds > 0 else float("nan")
            return [name, str(images), f"{seconds:.2f}", f"{rate:.1f}", f"{rate / bare_rate:.2f}x", f"{others:.2f}"]

        rows.append(row("bare open_clip loop, serial decode (model load excluded)", bare["images"], bare["seconds"], bare["others"]))
        rows.append(row("`run.py index` report.seconds (model load excluded)", cli["added"], cli["seconds"], cli["others"]))
        rows.append(row("`run.py index` subprocess wall clock (start-up + model load included)", cli["added"], cli["wall"], cli["others"]))
        rows.append(row(f"`run.py index` report.seconds, {n_copies} re-encoded files", big["added"], big["seconds"], big["others"]))
        rows.append([
            "re-run, nothing changed: report.seconds (files checked/s)", f"{rerun['files']} ({rerun['added']} added)",
            f"{rerun['seconds']:.2f}", f"{rerun['files'] / rerun['seconds']:.0f}", "-", f"{rerun['others']:.2f}",
        ])
        rows.append([
            "re-run, nothing changed: subprocess wall clock", f"{rerun['files']} ({rerun['added']} added)",
            f"{rerun['wall']:.2f}", f"{rerun['files'] / rerun['wall']:.1f}", "-", f"{rerun['others']:.2f}",
        ])
        print()
        print(f"### Indexing speed ({CLIP_SPEC}, {os.cpu_count()} cores, torch {torch.__version__}, "
              f"{torch.get_num_threads()} torch threads, batch 32, CLI workers 2)")
        print()
        print(table(["method", "images", "seconds", "images/s", "ratio vs bare", "others' CPU (cores)"], rows))
        print()
        print("others' CPU: cores used by other processes on the machine during that measurement "
              f"(from /proc/stat); 0 = quiet, {os.cpu_count()} = every core shared, numbers pessimistic.")
        print()
        if args.repeat > 1:
            print("Best of", args.repeat, "runs. All runs, images/s:")
            print("- bare:", ", ".join(f"{x['images'] / x['seconds']:.1f} (others {x['others']:.2f})" for x in bare_runs))
            print("- CLI report.seconds:", ", ".join(f"{x['added'] / x['seconds']:.1f} (others {x['others']:.2f})" for x in cli_runs))
            print()
        print(f"Bare loop breakdown: decode+preprocess {bare['decode']:.1f}s "
              f"({bare['images'] / bare['decode']:.0f} images/s alone), model {bare['encode']:.1f}s "
              f"({bare['images'] / bare['encode']:.1f} images/s alone); model load {bare['load']:.1f}s (excluded).")
        print(f"CLI time outside report.seconds (Python start-up, imports, Chroma open, model load, JSON): "
              f"{cli['wall'] - cli['seconds']:.1f}s first run, {rerun['wall'] - rerun['seconds']:.1f}s re-run.")
        print()

        # -- memory table
        mem_rows = [
            [f"{len(photos)} photos (symlinks)", str(cli_runs[0]["files"]), str(cli_runs[0]["added"]),
             f"{cli_runs[0]['rss_mb']:.0f}", f"{cli_runs[0]['seconds']:.1f}", f"{cli_runs[0]['wall']:.1f}"],
            [f"re-run of the {len(photos)}, nothing changed", str(rerun["files"]), str(rerun["added"]),
             f"{rerun['rss_mb']:.0f}", f"{rerun['seconds']:.2f}", f"{rerun['wall']:.1f}"],
            [f"{n_copies} re-encoded copies (distinct hashes)", str(big["files"]), str(big["added"]),
             f"{big['rss_mb']:.0f}", f"{big['seconds']:.1f}", f"{big['wall']:.1f}"],
        ]
        how = "/usr/bin/time -v" if TIME_BIN.is_file() else "getrusage(RUSAGE_CHILDREN)"
        print(f"### Peak RSS of the `run.py index` subprocess ({how})")
        print()
        print(table(["gallery", "files", "added", "peak RSS (MB)", "report.seconds", "wall (s)"], mem_rows))
        growth = big["rss_mb"] - cli_runs[0]["rss_mb"]
        print()
        print(f"{n_copies / len(photos):.1f}x the files: peak RSS {growth:+.0f} MB "
              f"({growth / max(n_copies - len(photos), 1) * 1024:+.1f} KB per extra image).")
        print()
        print(f"Total {time.perf_counter() - started:.0f}s. Load average (1, 5, 15 min) at start "
              f"{', '.join(f'{x:.2f}' for x in load_start)}, at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}: "
              f"above ~1 means other processes shared the {os.cpu_count()} cores and the timings are pessimistic.")
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
