"""Evidence and re-ranking: what verification and judging say about each candidate, as numbers, and
the one rule that combines them with what retrieval knew.

- `answer_probability`: P(yes) of a one-word answer, from the reply's token logprobs where the
  backend returned them, else 1/0 from the parsed word (None when there is no answer at all);
- `CaptionMatcher`: caption mode's verifier that makes no model call: does the candidate's stored
  caption name the question's object (words, WordNet, then the text encoder's similarity);
- `question_trust` / `question_weights`: how much each question counts (the request names its thing
  or not), capped so that no single question overturns a margin retrieval was sure of;
- `fuse`: retrieval score (standardised over the candidates) + the weighted, centred evidence, so
  evidence that is the same for every candidate leaves the order exactly as it was, and evidence
  moves a candidate in proportion to its strength;
- `count_order` / `first_yes_order`: ImageScope's rules, kept as the faithful baseline.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lensgraph.pipeline.reasoning.lexicon import Lexicon, load_lexicon
from lensgraph.pipeline.models.calls import Reply
from lensgraph.pipeline.reasoning.objects import FULL, PARTIAL, content_words, match, question_object, words

YES = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def answer_probability(reply: Reply, parsed: bool | None) -> float | None:
    """P(yes) for a reply that should start with Yes or No.

    From logprobs: at the first of the reply's first positions where "yes" or "no" is among the
    alternatives, P(yes) / (P(yes) + P(no)) over every alternative that reads as either ("Yes",
    " yes", "YES"). Without logprobs, the parsed word counts as certain.
    """
    for alternatives in reply.logprobs or ():
        yes = no = 0.0
        for token, logprob in alternatives.items():
            match = YES.match(token)
            if match and token.strip().lower() in ("yes", "no"):
                if match.group(1).lower() == "yes":
                    yes += math.exp(logprob)
                else:
                    no += math.exp(logprob)
        if yes + no > 0:
            return yes / (yes + no)
    if parsed is None:
        return None
    return 1.0 if parsed else 0.0


def choice_probabilities(reply: Reply, n: int, parsed: int | None) -> list[float] | None:
    """For a listwise judge asked to name the best of n candidates by number: the probability of each
    number from the first position that offers one, else certainty for the parsed number."""
    for alternatives in reply.logprobs or ():
        mass = [0.0] * n
        for token, logprob in alternatives.items():
            text = token.strip()
            if text.isdigit() and 1 <= int(text) <= n:
                mass[int(text) - 1] += math.exp(logprob)
        if sum(mass) > 0:
            total = sum(mass)
            return [m / total for m in mass]
    if parsed is None:
        return None
    return [1.0 if i == parsed - 1 else 0.0 for i in range(n)]


def parse_choice(text: str, n: int) -> int | None:
    """The number of the candidate a listwise judge picked ("2", "Image 2", "2 > 1 > 3"), or None."""
    for match in re.finditer(r"\d+", text):
        if 1 <= int(match.group()) <= n:
            return int(match.group())
    return None


def expected_probability(p_yes: float | None, expected: str) -> float | None:
    if p_yes is None:
        return None
    return p_yes if expected == "yes" else 1.0 - p_yes


Embed = Callable[[list[str]], np.ndarray]  # texts -> normalised rows


@dataclass
class CaptionMatcher:
    """P(yes) for "Is there X?" about an image from its stored caption, with no model call.

    The caption naming X (pipeline/reasoning/objects.py: its words, a synonym, a kind of it, a group of them,
    through WordNet) is a yes (0.95: captions can be wrong); naming only the head of a multi-word X
    ("table" for "dining table") is `partial`. Otherwise, with a text encoder, the closest caption
    word or word pair to X decides: P = sigmoid((similarity - midpoint) / width), so "person" can
    still be found in "a skateboarder". Without one, the fraction of X's words found, scaled to at
    most 0.5.
    """

    embed: Embed | None = None
    midpoint: float = 0.65  # tuned on coco-mini dev (0.5-0.8 tried) with MiniLM
    width: float = 0.05
    partial: float = 0.8
    lexicon: Lexicon | None = field(default_factory=load_lexicon, repr=False)
    cache_size: int = 50_000
    """Text vectors kept (least recently used dropped): a long-running server sees endless texts."""
    _vectors: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _vector(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        fresh = dict(zip(missing, self.embed(missing))) if missing and self.embed is not None else {}
        with self._lock:
            for text, row in fresh.items():
                self._vectors[text] = np.asarray(row, dtype=np.float32)
            rows = [self._vectors[t] if t in self._vectors else fresh[t] for t in texts]
            for text in texts:
                if text in self._vectors:
                    self._vectors.move_to_end(text)
            while len(self._vectors) > self.cache_size:
                self._vectors.popitem(last=False)
        return np.stack(rows)

    def probability(self, phrase: str, caption: str) -> float | None:
        wanted = content_words(phrase)
        if not wanted:
            return None
        found = match(phrase, caption, self.lexicon)
        if found == FULL:
            return 0.95
        if found == PARTIAL:
            return self.partial
        have = words(caption)
        if self.embed is None or not have:
            return 0.5 * sum(1 for w in wanted if match(w, caption, self.lexicon)) / len(wanted)
        spans = list(dict.fromkeys(have + [f"{a} {b}" for a, b in zip(have, have[1:])]))
        target = self._vector([" ".join(wanted)])[0]
        similarity = float((self._vector(spans) @ target).max())
        return 1.0 / (1.0 + math.exp(-(similarity - self.midpoint) / self.width))


def standardise(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    spread = array.std()
    return (array - array.mean()) / spread if spread > 1e-12 else np.zeros_like(array)


def centred_table(probabilities: Sequence[Sequence[float | None]]) -> np.ndarray:
    """Candidates x questions: each probability minus the question's mean over candidates. Unknown
    answers count as the question's mean (no evidence either way)."""
    if not probabilities or not probabilities[0]:
        return np.zeros((len(probabilities), 0))
    table = np.array([[np.nan if p is None else p for p in row] for row in probabilities], dtype=np.float64)
    known = ~np.isnan(table)
    means = np.where(known, table, 0.0).sum(axis=0) / np.maximum(known.sum(axis=0), 1)
    filled = np.where(known, table, means[None, :])
    return filled - filled.mean(axis=0, keepdims=True)


def question_trust(questions: Sequence[dict[str, str]], instruction: str, mentions: Callable[[str, str], bool],
                   unnamed: float) -> list[float]:
    """How far the plan is trusted on each question: fully on a thing the request itself names, `unnamed`
    on one the plan brought in (the reference's own things, a guess of a small model)."""
    return [1.0 if mentions(question_object(q["question"]), instruction) else unnamed for q in questions]


def question_weights(trust: Sequence[float], weight: float, margin: float) -> list[float]:
    """Each question's weight in the fusion: `weight` shared among the questions in proportion to how
    far the plan is trusted on each (`trust`, 0..1), and never above `margin`: a question's evidence
    moves a candidate by at most `margin` standardised retrieval scores, so no single question can
    overturn an order retrieval was sure of."""
    if not trust:
        return []
    return [min(weight * t / len(trust), margin) for t in trust]


def fuse(order: Sequence[str], scores: Sequence[float], evidence: np.ndarray, weight: float) -> tuple[list[str], list[float]]:
    """Re-rank `order` by score + weight x evidence (scores standardised over these candidates).
    Ties keep the given order. Returns the new order and each candidate's fused score."""
    fused = standardise(scores) + weight * np.asarray(evidence, dtype=np.float64)
    position = {c: i for i, c in enumerate(order)}
    ranked = sorted(range(len(order)), key=lambda i: (-round(float(fused[i]), 9), position[order[i]]))
    return [order[i] for i in ranked], [round(float(fused[i]), 6) for i in ranked]


def count_order(candidates: list[str], matches: dict[str, int]) -> list[str]:
    """ImageScope: candidates re-sorted by the number of answers matching expectation; ties keep the order."""
    position = {c: i for i, c in enumerate(candidates)}
    return sorted(candidates, key=lambda c: (-matches.get(c, 0), position[c]))


@dataclass(frozen=True)
class Verification:
    """What verification concluded: per candidate the probability of each expected answer, how
    many answers matched, and the new order with its scores (None under the count rule)."""

    probabilities: dict[str, list[float | None]]
    matches: dict[str, int]
    order: list[str]
    scores: list[float] | None


def tally_verification(
    order: Sequence[str], scores: Sequence[float], p_yes: dict[str, list[float | None]],
    questions: Sequence[dict[str, str]], rule: str = "fuse", weight: float = 1.0,
    trust: Sequence[float] | None = None, margin: float = math.inf,
) -> Verification:
    """Turn P(yes) per (candidate, question) into evidence and a new order: `rule` "fuse" moves
    candidates from their retrieval `scores` by each question's centred evidence times its weight
    (`question_weights`: trust in the plan, capped by `margin`); "imagescope" re-sorts by the count
    of expected answers (ImageScope's rule)."""
    probabilities = {cid: [expected_probability(p, q["expected"]) for p, q in zip(ps, questions)] for cid, ps in p_yes.items()}
    matches = {cid: sum(1 for p in ps if p is not None and p > 0.5) for cid, ps in probabilities.items()}
    if rule == "imagescope":
        return Verification(probabilities, matches, count_order(list(order), matches), None)
    weights = question_weights(list(trust) if trust is not None else [1.0] * len(questions), weight, margin)
    table = centred_table([probabilities[i] for i in order])
    evidence = table @ np.asarray(weights) if table.shape[1] else np.zeros(len(order))
    ids, fused = fuse(order, scores, evidence, 1.0)
    return Verification(probabilities, matches, ids, fused)


def first_yes_order(candidates: list[str], verdicts: dict[str, bool | None], alpha: int) -> list[str]:
    """ImageScope: the first of the top-alpha candidates judged Yes moves to rank 1; the rest keep their order."""
    for candidate in candidates[:alpha]:
        if verdicts.get(candidate) is True:
            return [candidate] + [c for c in candidates if c != candidate]
    return list(candidates)


def result_evidence(state: dict, candidate_id: str) -> dict | None:
    """What verification and judging said about one result, for people and agents: each question
    with the expected answer, the answer and its probability, the judge's verdict, and `relevance`
    (the mean of those probabilities: the number a threshold applies to). None when unverified."""
    questions = state.get("questions") or []
    probabilities = (state.get("probabilities") or {}).get(candidate_id)
    answers = (state.get("answers") or {}).get(candidate_id) or []
    verdict = (state.get("verdicts") or {}).get(candidate_id)
    if probabilities is None and verdict is None:
        return None
    checks = [
        {"question": q["question"], "expected": q["expected"], "answer": a,
         "p_expected": None if p is None else round(p, 4)}
        for q, p, a in zip(questions, probabilities or [], answers + [None] * len(questions))
    ]
    known = [c["p_expected"] for c in checks if c["p_expected"] is not None]
    if verdict and verdict.get("p_yes") is not None:
        known.append(verdict["p_yes"])
    return {
        "questions": checks,
        "passed": sum(1 for c in checks if c["p_expected"] is not None and c["p_expected"] > 0.5),
        "judge": None if verdict is None else {"verdict": verdict.get("verdict"), "p_yes": verdict.get("p_yes")},
        "relevance": round(sum(known) / len(known), 4) if known else None,
    }
