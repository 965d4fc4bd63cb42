"""Shared fixtures: real photos from ../shared/data/coco-mini, real Chroma, random-weight CLIP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from local_servers import missing

ROOT = Path(__file__).resolve().parents[1]
COCO = Path(os.environ.get("LENSGRAPH_COCO_MINI", ROOT.parent / "shared" / "data" / "coco-mini"))
RANDOM_CLIP = "ViT-B-32:none"
MINILM = "st:all-MiniLM-L6-v2"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def coco() -> Path:
    """The coco-mini photos. On a bare clone (no ../shared) the tests that need them skip, saying
    why; CI, which has them, must not skip."""
    if not (COCO / "images").is_dir():
        missing(f"needs the coco-mini photos at {COCO} (set LENSGRAPH_COCO_MINI)")
    return COCO


@pytest.fixture(scope="session")
def benchmarks() -> Path:
    """The official annotation files of CIRCO, CIRR, FashionIQ and ChatIR (../shared/data/benchmarks)."""
    folder = COCO.parent / "benchmarks"
    if not (folder / "README.md").is_file():
        missing(f"needs the official benchmark files at {folder}")
    return folder


@pytest.fixture(scope="session")
def gallery_ids(coco: Path) -> list[str]:
    return sorted(p.stem for p in (coco / "images").glob("*.jpg"))


@pytest.fixture(scope="session")
def clip():
    from lensgraph.pipeline.models.encoders import load_clip

    return load_clip(RANDOM_CLIP)


@pytest.fixture(scope="session")
def minilm():
    from lensgraph.pipeline.models.encoders import load_text_encoder

    return load_text_encoder(MINILM, None)


@pytest.fixture(scope="session")
def coco_searcher(tmp_path_factory, coco, clip, minilm):
    """The 159-image coco-mini gallery indexed once, with MiniLM captions."""
    from lensgraph.adapters.searcher import Searcher
    from lensgraph.pipeline.settings import load_settings

    settings = load_settings(db=tmp_path_factory.mktemp("coco-db"), clip=RANDOM_CLIP, text_encoder=MINILM)
    searcher = Searcher.open(settings, create=True)
    searcher.__dict__["clip"] = clip
    searcher.__dict__["text_encoder"] = minilm
    report = searcher.add_folder(coco / "images", captions=coco / "gallery_captions.jsonl")
    searcher.first_report = report
    return searcher


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python run.py ARGS` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        cwd=ROOT,
    )


def cli_json(*args: str, **kwargs) -> dict:
    result = run_cli(*args, "--json", **kwargs)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI's main() in this process (fast: no interpreter start-up or re-imports);
    returns (exit code, stdout, stderr)."""
    from lensgraph import run

    old_argv = sys.argv
    sys.argv = ["lensgraph", *args]
    try:
        run.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old_argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err
