"""Query terms as photo-search CLIs take them (rclip's conventions).

    lensgraph search "a red bicycle"
    lensgraph search ./cat.jpg "with a dog"        # an existing image path is the reference
    lensgraph search "beach" - "people"            # minus a term
    lensgraph search 2:"sunset" + "boats"          # a weight before a colon

A term is a text with a signed weight: `+`/`-` tokens set the sign of the next term, `W:` in front
of a term sets its weight (default 1). Without an LLM the terms are combined in embedding space;
with one, `instruction()` hands them to planning as additions and removals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.images import IMAGE_EXTENSIONS

WEIGHT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+):(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Term:
    text: str
    weight: float = 1.0  # negative: away from this


@dataclass(frozen=True)
class Query:
    reference: Path | None
    terms: tuple[Term, ...]

    def instruction(self) -> str:
        """The terms as one request for planning: the positive ones, then "without" the negative."""
        wanted = [t.text for t in self.terms if t.weight > 0]
        unwanted = [t.text for t in self.terms if t.weight < 0]
        text = ", ".join(wanted)
        if unwanted:
            text += (", " if text else "") + "without " + " and without ".join(unwanted)
        return text

    @property
    def plain(self) -> bool:
        """One positive term of weight 1: an ordinary query."""
        return len(self.terms) == 1 and self.terms[0].weight == 1.0


def is_image_path(token: str) -> bool:
    path = Path(token).expanduser()
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def parse_query(tokens: list[str], reference: Path | None = None) -> Query:
    """The positional arguments of `search`: an optional reference image path first, then terms."""
    tokens = [t for t in tokens if t.strip()]
    if tokens and reference is None and is_image_path(tokens[0]):
        reference, tokens = Path(tokens[0]).expanduser(), tokens[1:]
    terms: list[Term] = []
    sign = 1.0
    for token in tokens:
        if token in ("+", "-"):
            sign = -1.0 if token == "-" else 1.0
            continue
        weight, text = 1.0, token.strip()
        if match := WEIGHT.match(text):
            weight, text = float(match.group(1)), match.group(2).strip()
        if not text:
            raise LensgraphError(f"Empty query term in {token!r}: write a weight as 2:\"sunset\".")
        terms.append(Term(text, sign * weight))
        sign = 1.0
    if terms and all(t.weight <= 0 for t in terms):
        raise LensgraphError("Only negative terms: say what to look for too, e.g. \"beach\" - \"people\".")
    return Query(reference, tuple(terms))
