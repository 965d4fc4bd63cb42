"""The page at /: one jinja2 template (adapters/web/templates/index.html) that renders the report's
card, evidence and stage-explanation macros (adapters/cli/templates/cards.html) once, blank, inside
<template> elements; static/app.js copies and fills them with textContent as results arrive."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

from lensgraph.adapters.cli.report import TEMPLATE_DIR

TEMPLATES = Path(__file__).resolve().parent / "templates"

BLANK_CHECK = {"question": "", "expected": "", "answer": "", "p": "", "cls": "", "symbol": "", "tip": ""}
BLANK_CARD: dict[str, Any] = {
    "id": "", "rank": "", "label": "", "score": "", "caption": "", "move": None, "yes": False,
    "thumb": {"src": "", "css_class": None, "label": "", "missing": ""},
    "evidence": {"hidden": True, "passed": "", "checks": [], "relevance": ""},
    "judge": {"hidden": True, "word": "", "p": "", "reply": ""},
}
BLANK_QUERY = {"instruction": "", "caption": "", "edits": [], "descriptions": [], "questions": []}
BLANK_TRACE = {"stage": "", "seconds": "", "calls": "", "cache_hits": "", "warnings": []}


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The page's templates, then the report's (for the shared macros); autoescaping on."""
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(TEMPLATES), jinja2.FileSystemLoader(TEMPLATE_DIR)])
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)


@functools.lru_cache(maxsize=1)
def render_page() -> str:
    return environment().get_template("index.html").render(
        blank_card=BLANK_CARD, blank_check=BLANK_CHECK, blank_query=BLANK_QUERY, blank_trace=BLANK_TRACE,
    )
