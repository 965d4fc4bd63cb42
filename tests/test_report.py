"""The HTML search report: built from a hand-made state over real coco-mini photos, then rendered
in headless Chromium (skipped when chromium is not installed: `apt-get install -y chromium`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lensgraph.adapters.cli.report import render_html

QUESTIONS = [
    {"question": "Is there an oven?", "expected": "yes"},
    {"question": "Is there a cake?", "expected": "no"},
]


@pytest.fixture
def search(coco: Path, tmp_path: Path) -> tuple[dict, dict[str, str]]:
    """A realistic final state of a composed query, and the id -> path lookup the caller passes."""
    photos = sorted((coco / "images").glob("*.jpg"))[:11]
    reference, gallery = photos[0], photos[1:]
    paths = {p.stem: str(p) for p in gallery}
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(gallery[-1].read_bytes()[:2000])  # a truncated JPEG
    paths[gallery[-1].stem] = str(broken)
    retrieved = [p.stem for p in gallery]
    yes_no = {0: ("No", "Yes"), 1: ("Yes", "No"), 2: ("Yes", None), 3: ("maybe", "No")}
    answers = {cid: list(yes_no.get(i, ("No", "No"))) for i, cid in enumerate(retrieved)}
    matches = {cid: sum(a is not None and a.startswith(w) for a, w in zip(answers[cid], ("Yes", "No")))
               for cid in retrieved}
    verified = sorted(retrieved, key=lambda c: (-matches[c], retrieved.index(c)))
    assert verified != retrieved
    judged = [verified[1]] + [c for c in verified if c != verified[1]]
    state = {
        "instruction": "also has an oven",
        "reference": str(reference),
        "reference_id": reference.stem,
        "caption": "A kitchen <script>alert(1)</script> with a cake & two people.",
        "edits": [{"type": "addition", "text": "an oven"}, {"type": "removal", "text": "cake"}],
        "descriptions": ["an oven", "a kitchen with an oven", "A kitchen with an oven and two people."],
        "questions": QUESTIONS,
        "candidates": [{"id": c, "path": paths[c], "score": round(0.31 - 0.01 * retrieved.index(c), 6)} for c in judged],
        "rankings": {"retrieve": retrieved, "verify": verified, "judge": judged},
        "answers": answers,
        "matches": matches,
        "verdicts": {
            verified[0]: {"verdict": False, "reply": "No oven visible.\nANSWER: No"},
            verified[1]: {"verdict": True, "reply": "An oven on the left.\nANSWER: Yes"},
            verified[2]: {"verdict": None, "reply": "hard to say"},
        },
        "trace": [
            {"stage": "caption", "seconds": 0.002, "calls": 0, "cache_hits": 0, "warnings": []},
            {"stage": "reason", "seconds": 1.5, "calls": 1, "cache_hits": 0, "warnings": []},
            {"stage": "retrieve", "seconds": 0.08, "calls": 0, "cache_hits": 0, "warnings": []},
            {"stage": "propose", "seconds": 0.9, "calls": 0, "cache_hits": 1, "warnings": []},
            {"stage": "verify", "seconds": 4.2, "calls": 19, "cache_hits": 0,
             "warnings": ["verify: 1/20 calls failed (timeout)", "verify: 1/20 replies had no yes/no"]},
            {"stage": "judge", "seconds": 2.1, "calls": 3, "cache_hits": 0,
             "warnings": ["judge: no 'ANSWER: Yes/No' in the reply"]},
        ],
    }
    return state, paths


def test_report_content(search):
    state, paths = search
    page = render_html(state, paths)
    for stage in ("retrieve", "verify", "judge"):
        assert f'id="stage-{stage}"' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    # reference + 10 candidates, one of them a truncated file: 10 thumbnails, each embedded once
    assert page.count("data:image/jpeg;base64,") == 10
    assert page.count("image unavailable: truncated or corrupt image") == 3  # one per stage row
    assert "http://" not in page and "https://" not in page
    assert page.count('class="card yes"') == 1 and "judge: <b>Yes</b>" in page and "judge: <b>unclear</b>" in page
    assert "▲" in page and "▼" in page
    assert 'class="bad">⚠' in page and 'class="unk">?' in page  # the failed call, the unparsed reply
    assert "verify: 1/20 calls failed (timeout)" in page and "ANSWER: No" in page  # warnings, verdict reply


def test_report_text_to_image_with_a_lookup_function(search):
    state, paths = search
    candidates = [{**c, "path": None} for c in state["candidates"]]
    state = {**state, "reference": None, "reference_id": None, "caption": "A blank image.", "candidates": candidates}
    page = render_html(state, lambda i: None if i == state["rankings"]["retrieve"][0] else paths.get(i), thumb_px=64)
    assert "blank reference (text-to-image)" in page
    assert page.count("data:image/jpeg;base64,") == 8  # no reference, one broken, one without a path
    assert "image unavailable: no file path for this image" in page


def test_report_renders_in_headless_chromium(search, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not on PATH (Debian: apt-get install -y chromium)")
    state, paths = search
    page = tmp_path / "report.html"
    page.write_text(render_html(state, paths, thumb_px=120), encoding="utf-8")  # fits one screen
    shot = tmp_path / "report.png"
    width, height = 1400, 1800
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},{height}",
         f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=60,
    )
    assert shot.is_file(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    with Image.open(shot) as img:
        assert img.format == "PNG" and img.size == (width, height)
        pixels = np.asarray(img.convert("RGB"))
    non_white = (pixels < 240).any(axis=2).mean()
    colours = len(np.unique(pixels[::4, ::4].reshape(-1, 3), axis=0))
    assert non_white > 0.1, f"screenshot mostly blank ({non_white:.1%} non-white)"
    assert colours > 1000, f"only {colours} distinct colours: thumbnails not drawn?"
