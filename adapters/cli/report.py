"""A self-contained HTML report of one search: what was asked, what the model reasoned, and how
each ranking stage (retrieve, verify, judge) re-ordered the top-k.

One file, no external resources, no JavaScript: every thumbnail is a base64 JPEG data URL, written
once per distinct image as a CSS class and reused by every row it appears in. The page is a jinja2
template (`adapters/cli/templates/report.html`) with autoescaping on, so model output (untrusted) is
always text. The result card and the stage explanation are macros (`templates/cards.html`) that the
web app's page uses too (adapters/web), so both show a result and its evidence the same way.
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2

from lensgraph.pipeline.errors import ImageLoadError
from lensgraph.pipeline.images import load_image
from lensgraph.pipeline.reasoning.replies import parse_yes_no
from lensgraph.pipeline.settings import RANKING_STAGES

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
"""The report's templates and the macros shared with the web page (`cards.html`, `cards.css`)."""


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """Templates with autoescaping on for every file (html or css alike: all of it is page text)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _thumbnail(path: str | None, thumb_px: int) -> tuple[str | None, str]:
    """(base64 JPEG data URL, "") or (None, why the image could not be shown)."""
    if not path:
        return None, "no file path for this image"
    try:
        img = load_image(path)
        img.thumbnail((thumb_px, thumb_px))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80)
    except ImageLoadError as e:
        return None, e.reason
    except (OSError, ValueError) as e:  # a failure while resizing or encoding
        return None, f"cannot render: {e}"
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), ""


class _Thumbs:
    """Each distinct image encoded once, as a CSS class holding its data URL."""

    def __init__(self, thumb_px: int):
        self.thumb_px = thumb_px
        self.classes: dict[str, str] = {}
        self.css: list[dict[str, str]] = []
        self.failed: dict[str, str] = {}

    def view(self, image_id: str, path: str | None) -> dict[str, Any]:
        """What the `thumb` macro draws for one image."""
        if image_id not in self.classes and image_id not in self.failed:
            url, reason = _thumbnail(path, self.thumb_px)
            if url is None:
                self.failed[image_id] = reason
            else:
                self.classes[image_id] = f"i{len(self.classes)}"
                self.css.append({"selector": f".{self.classes[image_id]}", "url": url})
        if image_id in self.failed:
            return {"src": None, "css_class": None, "label": image_id, "missing": f"image unavailable: {self.failed[image_id]}"}
        return {"src": None, "css_class": self.classes[image_id], "label": image_id, "missing": ""}


def _move(cid: str, rank: int, previous: list[str] | None) -> dict[str, str] | None:
    if previous is None:
        return None
    if cid not in previous:
        return {"cls": "up", "text": "new"}
    delta = previous.index(cid) - rank
    if delta == 0:
        return {"cls": "same", "text": "="}
    return {"cls": "up", "text": f"▲{delta}"} if delta > 0 else {"cls": "down", "text": f"▼{-delta}"}


def check_view(question: Mapping[str, Any], reply: str | None, p_expected: float | None) -> dict[str, Any]:
    """One verification question about one candidate, as the `check` and `mark` macros show it."""
    expected = str(question.get("expected", "?"))
    parsed = None if reply is None else parse_yes_no(reply)
    if reply is None:
        cls, symbol = "bad", "⚠"
    elif parsed is None:
        cls, symbol = "unk", "?"
    elif parsed == (expected == "yes"):
        cls, symbol = "ok", "✓"
    else:
        cls, symbol = "bad", "✗"
    answer = reply if reply is not None else "call failed"
    return {"question": str(question.get("question", "")), "expected": expected, "answer": answer,
            "p": "" if p_expected is None else f"{p_expected:.2f}", "cls": cls, "symbol": symbol,
            "tip": f"{question.get('question', '')} expected {expected}; reply: {answer}"}


def _evidence_view(cid: str, state: Mapping[str, Any]) -> dict[str, Any] | None:
    questions = state.get("questions") or []
    answers = (state.get("answers") or {}).get(cid)
    if answers is None:
        return None
    probabilities = list((state.get("probabilities") or {}).get(cid) or [])
    probabilities += [None] * (len(questions) - len(probabilities))
    matches = state.get("matches") or {}
    known = [p for p in probabilities if p is not None]
    return {
        "hidden": False,
        "passed": f"{matches[cid]}/{len(questions)}" if cid in matches else "",
        "checks": [check_view(q, a, p) for q, a, p in zip(questions, answers, probabilities)],
        "relevance": f"evidence {sum(known) / len(known):.2f}" if known else "",
    }


def _judge_view(verdict: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if verdict is None:
        return None
    word = {True: "Yes", False: "No"}.get(verdict.get("verdict"), "unclear")
    p_yes = "" if verdict.get("p_yes") is None else f" ({float(verdict['p_yes']):.2f})"
    return {"hidden": False, "word": word, "p": p_yes, "reply": str(verdict.get("reply", ""))}


def _card(cid: str, rank: int, stage: str, state: Mapping[str, Any], thumb: dict[str, Any],
          previous: list[str] | None, score: float | None) -> dict[str, Any]:
    verdict = (state.get("verdicts") or {}).get(cid) if stage == "judge" else None
    return {
        "id": cid, "rank": f"#{rank + 1}", "label": cid[:16], "thumb": thumb, "caption": None,
        "move": _move(cid, rank, previous), "score": "" if score is None else f"{score:.4f}",
        "evidence": _evidence_view(cid, state) if stage != "retrieve" else None,
        "judge": _judge_view(verdict), "yes": bool(verdict and verdict.get("verdict") is True),
    }


def _item(text: Any, label: Any = "", strong: Any = "") -> dict[str, str]:
    """One line of a `query_details` list: "<b>label</b>: text → <b>strong</b>"."""
    return {"label": str(label), "text": str(text), "strong": str(strong)}


def query_view(state: Mapping[str, Any]) -> dict[str, Any]:
    """The request as the models read it, for the `query_details` macro."""
    return {
        "instruction": str(state.get("instruction", "")),
        "caption": str(state.get("caption", "")),
        "edits": [_item(e.get("text", ""), label=e.get("type", "")) for e in state.get("edits") or []],
        "descriptions": [_item(d) for d in state.get("descriptions") or []],
        "questions": [_item(q.get("question", ""), strong=q.get("expected", "?")) for q in state.get("questions") or []],
    }


def trace_view(trace: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per stage, for the `trace_row` macro."""
    return [{"stage": str(t.get("stage", "")), "seconds": f"{float(t.get('seconds', 0)):.3f}",
             "calls": int(t.get("calls", 0)), "cache_hits": int(t.get("cache_hits", 0)),
             "warnings": [str(w) for w in t.get("warnings") or []]} for t in trace]


def _rows(state: Mapping[str, Any], thumbs: _Thumbs, lookup: Callable[[str], str | None]) -> list[dict[str, Any]]:
    scores = {c["id"]: c.get("score") for c in state.get("candidates") or []}
    paths = {c["id"]: c.get("path") for c in state.get("candidates") or []}
    rankings = state.get("rankings") or {}
    stages = [s for s in RANKING_STAGES if s in rankings] + [s for s in rankings if s not in RANKING_STAGES]
    rows, previous = [], None
    for stage in stages:
        cards = [_card(cid, rank, stage, state, thumbs.view(cid, lookup(cid) or paths.get(cid)), previous, scores.get(cid))
                 for rank, cid in enumerate(rankings[stage])]
        rows.append({"stage": stage, "cards": cards})
        previous = rankings[stage]
    return rows


def render_html(
    state: Mapping[str, Any],
    images: Callable[[str], str | None] | Mapping[str, str],
    title: str | None = None,
    thumb_px: int = 160,
) -> str:
    """The final graph state of one search as a self-contained HTML page."""
    lookup = images.get if isinstance(images, Mapping) else images
    thumbs = _Thumbs(thumb_px)
    title = title or f"lensgraph: {state.get('instruction', '')}"
    reference = state.get("reference")
    ref_id = state.get("reference_id") or str(reference or "")
    ref_view = (thumbs.view(ref_id, reference) if reference else
                {"src": None, "css_class": None, "label": "", "missing": "blank reference (text-to-image)"})
    rows = _rows(state, thumbs, lookup)
    return environment().get_template("report.html").render(
        title=title, thumb_px=int(thumb_px), reference=ref_view, query=query_view(state), rows=rows,
        trace=trace_view(state.get("trace") or []), thumb_css=thumbs.css,
    )
