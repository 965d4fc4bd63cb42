"""The retrieval graph's state: plain data only (ids, texts, scores), so it checkpoints and prints."""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired, TypedDict


def merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return {**left, **right}


class SearchInput(TypedDict):
    """What a caller gives the graph."""

    instruction: str
    """The request: a modification of the reference ("without the people"), or a full description."""
    reference: NotRequired[str | None]
    """Path of the reference image; None or absent for text-to-image (a blank reference)."""
    subset: NotRequired[list[str]]
    """Index ids scored whatever their rank (CIRR's img_set members): their order over the whole
    gallery goes to `subset_order`."""


class Candidate(TypedDict):
    id: str
    """Content hash of the image (its id in the index)."""
    path: str | None
    score: float
    """The current ranking's score: the retrieval score, then the fused score after each re-ranking."""
    retrieval: NotRequired[float]
    """The retrieval score (kept when re-ranking replaces `score`)."""


class SearchState(SearchInput, total=False):
    reference_id: str | None
    """Content hash of the reference image (excluded from results)."""
    caption: str
    """Caption of the reference ("A blank image." for text-to-image)."""
    translation: str
    """The request in English, when it was written in another language (the stages after the plan
    read this; CLIP, the caption encoder and the plan checks are English)."""
    edits: list[dict[str, str]]
    """Atomic edits: {"type": addition|removal|modification|comparison|retention, "text"}."""
    descriptions: list[str]
    """Target descriptions the retrieval embeds (three granularities by default)."""
    questions: list[dict[str, str]]
    """Verification questions: {"question", "expected": yes|no}."""
    candidates: list[Candidate]
    """The current ranking of the top-k, best first."""
    subset_order: list[str]
    """The `subset` ids in retrieval order over the whole gallery (the reference left out when excluded)."""
    rankings: Annotated[dict[str, list[str]], merge]
    """Candidate ids after each stage that ranks (retrieve, verify, judge)."""
    answers: dict[str, list[str | None]]
    """Per candidate, the verifier's reply to each question (None when the call failed)."""
    matches: dict[str, int]
    """Per candidate, how many answers matched the expectation."""
    probabilities: dict[str, list[float | None]]
    """Per candidate, the probability of each question's expected answer (None: no answer)."""
    verdicts: dict[str, dict[str, Any]]
    """Per judged candidate: {"verdict": True|False|None, "p_yes": probability or None, "reply": text}."""
    trace: Annotated[list[dict[str, Any]], operator.add]
    """One entry per stage run: stage, seconds, calls, cache_hits, warnings."""
