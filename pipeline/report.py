"""A self-contained HTML report of one search: what was asked, what the model reasoned, and how
each ranking stage (retrieve, verify, judge) re-ordered the top-k.

One file, no external resources, no JavaScript: every thumbnail is a base64 JPEG data URL, written
once per distinct image as a CSS class and reused by every row it appears in. Model output is
untrusted, so every piece of text goes through html.escape.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping
from html import escape
from typing import Any

from pipeline.errors import ImageLoadError
from pipeline.images import load_image
from pipeline.reasoning import parse_yes_no

STAGE_ORDER = ("retrieve", "verify", "judge")

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:12px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 12px}h2{font-size:16px;margin:18px 0 6px;border-bottom:1px solid #ddd}
.query{display:flex;gap:20px;align-items:flex-start}.query dl{margin:0;flex:1}
dt{font-weight:600;margin-top:6px}dd{margin:0 0 0 12px}ul,ol{margin:2px 0;padding-left:20px}
.row{display:flex;flex-wrap:wrap;gap:6px}
.card{width:var(--t);border:1px solid #ccc;border-radius:4px;padding:4px;font-size:12px;background:#fafafa}
.card.yes{border:2px solid #2a2;background:#efe}
.thumb{width:var(--t);height:var(--t);background:#eee center/contain no-repeat}
.missing{background:#bbb;color:#333;display:flex;align-items:center;justify-content:center;
 text-align:center;font-size:11px;padding:6px;box-sizing:border-box;overflow:hidden;word-break:break-word}
.meta{display:flex;justify-content:space-between}.rank{font-weight:700}.id{color:#777;font-family:monospace}
.up{color:#080}.down{color:#b00}.same{color:#999}.ok{color:#080}.bad{color:#b00}.unk{color:#b60}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
td.n{text-align:right}.warn{color:#b00}.note{color:#666;font-size:12px}
"""


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
        self.css: list[str] = []
        self.failed: dict[str, str] = {}

    def html(self, image_id: str, path: str | None) -> str:
        if image_id not in self.classes and image_id not in self.failed:
            url, reason = _thumbnail(path, self.thumb_px)
            if url is None:
                self.failed[image_id] = reason
            else:
                self.classes[image_id] = f"i{len(self.classes)}"
                self.css.append(f".{self.classes[image_id]}{{background-image:url({url})}}")
        if image_id in self.failed:
            return f'<div class="thumb missing" title="{escape(image_id)}">image unavailable: {escape(self.failed[image_id])}</div>'
        return f'<div class="thumb {self.classes[image_id]}" role="img" aria-label="{escape(image_id)}"></div>'


def _move(cid: str, rank: int, previous: list[str] | None) -> str:
    if previous is None:
        return ""
    if cid not in previous:
        return '<span class="up">new</span>'
    delta = previous.index(cid) - rank
    if delta == 0:
        return '<span class="same">=</span>'
    return f'<span class="up">▲{delta}</span>' if delta > 0 else f'<span class="down">▼{-delta}</span>'


def _answers(replies: list[str | None], questions: list[dict[str, str]]) -> str:
    marks = []
    for q, reply in zip(questions, replies):
        tip = escape(f"{q.get('question', '')} expected {q.get('expected', '?')}; reply: {reply if reply is not None else 'call failed'}")
        parsed = None if reply is None else parse_yes_no(reply)
        if reply is None:
            mark = '<span class="bad">⚠</span>'
        elif parsed is None:
            mark = '<span class="unk">?</span>'
        elif parsed == (q.get("expected") == "yes"):
            mark = '<span class="ok">✓</span>'
        else:
            mark = '<span class="bad">✗</span>'
        marks.append(f'<span title="{tip}">{mark}</span>')
    return " ".join(marks)


def _items(values: list[Any], ordered: bool = False) -> str:
    if not values:
        return "<dd>(none)</dd>"
    tag = "ol" if ordered else "ul"
    return f"<dd><{tag}>" + "".join(f"<li>{v}</li>" for v in values) + f"</{tag}></dd>"


def render_html(
    state: Mapping[str, Any],
    images: Callable[[str], str | None] | Mapping[str, str],
    title: str | None = None,
    thumb_px: int = 160,
) -> str:
    """The final graph state of one search as a self-contained HTML page."""
    lookup = images.get if isinstance(images, Mapping) else images
    thumbs = _Thumbs(thumb_px)
    instruction = str(state.get("instruction", ""))
    title = title or f"lensgraph: {instruction}"
    questions = state.get("questions") or []
    scores = {c["id"]: c.get("score") for c in state.get("candidates") or []}
    paths = {c["id"]: c.get("path") for c in state.get("candidates") or []}
    answers, matches = state.get("answers") or {}, state.get("matches") or {}
    verdicts = state.get("verdicts") or {}
    probabilities = state.get("probabilities") or {}

    reference = state.get("reference")
    ref_id = state.get("reference_id") or str(reference or "")
    ref_html = (thumbs.html(ref_id, reference) if reference
                else '<div class="thumb missing">blank reference (text-to-image)</div>')
    edits = [f"<b>{escape(str(e.get('type', '')))}</b>: {escape(str(e.get('text', '')))}" for e in state.get("edits") or []]
    questions_html = [f"{escape(str(q.get('question', '')))} → <b>{escape(str(q.get('expected', '?')))}</b>" for q in questions]
    query = (
        f'<div class="query"><div class="card">{ref_html}<div class="id">reference</div></div><dl>'
        f"<dt>Instruction</dt><dd>{escape(instruction)}</dd>"
        f"<dt>Caption</dt><dd>{escape(str(state.get('caption', '')))}</dd>"
        f"<dt>Edits</dt>{_items(edits)}"
        f"<dt>Descriptions</dt>{_items([escape(str(d)) for d in state.get('descriptions') or []], ordered=True)}"
        f"<dt>Questions (expected answer)</dt>{_items(questions_html, ordered=True)}</dl></div>"
    )

    rankings = state.get("rankings") or {}
    stages = [s for s in STAGE_ORDER if s in rankings] + [s for s in rankings if s not in STAGE_ORDER]
    rows, previous = [], None
    for stage in stages:
        cards = []
        for rank, cid in enumerate(rankings[stage]):
            score = scores.get(cid)
            lines = [f'<div class="meta"><span class="rank">#{rank + 1}</span>{_move(cid, rank, previous)}'
                     f'<span>{"" if score is None else f"{score:.4f}"}</span></div>',
                     f'<div class="id" title="{escape(cid)}">{escape(cid[:16])}</div>']
            if stage != "retrieve" and cid in answers:
                n = f"{matches[cid]}/{len(questions)} " if cid in matches else ""
                lines.append(f"<div>{n}{_answers(answers[cid], questions)}</div>")
                probs = [p for p in probabilities.get(cid) or [] if p is not None]
                if probs:
                    lines.append(f'<div title="mean probability of the expected answers">evidence '
                                 f'{sum(probs) / len(probs):.2f}</div>')
            verdict = verdicts.get(cid)
            if stage == "judge" and verdict is not None:
                word = {True: "Yes", False: "No"}.get(verdict.get("verdict"), "unclear")
                p_yes = "" if verdict.get("p_yes") is None else f" ({float(verdict['p_yes']):.2f})"
                lines.append(f'<div title="{escape(str(verdict.get("reply", "")))}">judge: <b>{word}</b>{p_yes}</div>')
            yes = ' yes' if stage == "judge" and verdict and verdict.get("verdict") is True else ""
            cards.append(f'<div class="card{yes}">{thumbs.html(cid, lookup(cid) or paths.get(cid))}{"".join(lines)}</div>')
        rows.append(f'<h2>{escape(stage)} ({len(rankings[stage])})</h2><div class="row" id="stage-{escape(stage)}">{"".join(cards)}</div>')
        previous = rankings[stage]

    trace_rows = "".join(
        f"<tr><td>{escape(str(t.get('stage', '')))}</td><td class=n>{float(t.get('seconds', 0)):.3f}</td>"
        f"<td class=n>{int(t.get('calls', 0))}</td><td class=n>{int(t.get('cache_hits', 0))}</td>"
        f"<td class=warn>{'<br>'.join(escape(str(w)) for w in t.get('warnings') or [])}</td></tr>"
        for t in state.get("trace") or []
    )
    trace = ("<h2>Trace</h2><table><tr><th>stage</th><th>seconds</th><th>calls</th><th>cache hits</th>"
             f"<th>warnings</th></tr>{trace_rows}</table>")
    legend = ('<p class="note">score: the final ranking score (retrieval fused with the evidence) · ▲/▼: places moved vs the row above · '
              "answers: n/m matching expectation, ✓ matches expected, ✗ does not, ? no yes/no, ⚠ call failed (hover for the reply) · "
              "evidence: mean probability of the expected answers · judge (p): probability of Yes</p>")
    body = f"<h1>{escape(title)}</h1>{query}{legend}{''.join(rows)}{trace}"
    style = CSS + f":root{{--t:{int(thumb_px)}px}}\n" + "\n".join(thumbs.css)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{style}</style></head><body>{body}</body></html>\n")
