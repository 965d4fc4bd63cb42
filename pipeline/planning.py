"""The planning call: edits, target descriptions and verification questions in one LLM reply, and
the checks that catch a plan contradicting itself or what is known about the reference.

A plan is plain data:
    {"edits": [{"type": "addition", "text": "an oven"}],
     "questions": [{"question": "Is there an oven?", "expected": "yes"}],
     "descriptions": ["an oven", "a kitchen with an oven", "A kitchen with people and an oven."]}

The default prompt set's `reason.schema.json` is sent to servers that constrain JSON to a schema
(so a small model cannot answer off-format); every reply is still parsed tolerantly, since many
servers ignore schemas.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.jsonparse import extract_json_object
from pipeline.reasoning import BLANK_CAPTION, baseline_query, parse_reasoning, questions_of

MAX_QUESTIONS = 4
POSITIVE = ("addition", "modification", "retention", "comparison")  # what a target still shows

# Words that carry no object: question scaffolding, articles, and the like.
STOPWORDS = frozenset("""
a an the any some is are was were be been there here this that these those it its of in on at to for by with
without from into onto and or but not no does do did can could you see seen visible show shows shown showing
image images photo photos picture pictures scene target contain contains containing have has having also too
now same kind one two three four several many much more less other another instead than just only still
very what which who where how please must should would will
""".split())
NEGATIONS = frozenset({"no", "not", "without", "none", "nothing", "never", "nobody", "neither", "nor", "isn't",
                       "aren't", "doesn't", "don't", "minus", "except"})
WORD = re.compile(r"[a-z][a-z'-]*")


def forms(word: str) -> set[str]:
    """The word and its plausible singulars ("buses" -> bus, buse; "glasses" -> glass; "ties" -> tie, ty):
    two words are the same when their forms meet, which needs no dictionary."""
    word = word.lower().strip("'-")
    out = {word}
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        out.add(word[:-1])
        if word.endswith("es"):
            out.add(word[:-2])
        if word.endswith("ies"):
            out.add(word[:-3] + "y")
    return out


def words(text: str) -> list[str]:
    return [w.strip("'-") for w in WORD.findall(text.lower())]


def word_forms(text: str) -> set[str]:
    return {f for w in words(text) for f in forms(w)}


def content_words(text: str) -> list[str]:
    """The object words of a phrase or a question ("Is there a wine glass?" -> wine, glass)."""
    return [w for w in words(text) if len(w) > 1 and not (forms(w) & STOPWORDS)]


def negated(text: str, phrase_words: Iterable[str]) -> bool:
    """Whether a negation word comes shortly before one of the phrase's words in `text`."""
    tokens = words(text)
    wanted = {f for w in phrase_words for f in forms(w)}
    for i, token in enumerate(tokens):
        if forms(token) & wanted and any(t in NEGATIONS for t in tokens[max(0, i - 4): i]):
            return True
    return False


Mentions = Callable[[str, str], bool]  # (phrase, text) -> does the text mention it


def word_mentions(phrase: str, text: str) -> bool:
    """Every object word of the phrase occurs in the text (singular/plural alike)."""
    wanted, have = content_words(phrase), word_forms(text)
    return bool(wanted) and all(forms(w) & have for w in wanted)


@dataclass
class Plan:
    edits: list[dict[str, str]]
    questions: list[dict[str, str]]
    descriptions: list[str]
    warnings: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    """What the consistency checks changed, one line each (in the trace)."""
    planned: bool = True
    """Whether the questions were part of the plan (a two-call prompt set asks for them separately)."""

    def as_state(self) -> dict[str, Any]:
        """The graph's update. Questions only when planned: their absence sends the graph to propose."""
        state: dict[str, Any] = {"edits": self.edits, "descriptions": self.descriptions}
        if self.planned:
            state["questions"] = self.questions
        return state


def parse_plan(text: str, caption: str, instruction: str) -> Plan:
    """A plan from the reply. Missing descriptions fall back to the caption + instruction, missing
    questions are derived from the edits (by `check_plan`), each with a warning."""
    data = extract_json_object(text) or {}
    reasoning = parse_reasoning(text, caption, instruction)  # edits + descriptions, tolerant
    warnings = [reasoning.warning] if reasoning.warning else []
    questions = questions_of(data)
    planned = "questions" in data
    if planned and not questions and reasoning.value["edits"]:
        warnings.append("plan: reply had no usable questions; asking one per edit instead")
    return Plan(reasoning.value["edits"], questions[:MAX_QUESTIONS], reasoning.value["descriptions"], warnings,
                planned=planned)


CHECKS = ("edits_in_instruction", "removal_in_reference", "instruction_negation", "questions_follow_edits",
          "questions_on_topic", "unplanned_negatives", "questions_from_edits")


def check_plan(plan: Plan, caption: str, instruction: str, mentions: Mentions = word_mentions,
               checks: Iterable[str] = CHECKS) -> Plan:
    """Repair what contradicts itself or what is known, recording each change in `plan.fixes`:

    - edits_in_instruction: an addition or removal of something the instruction does not mention was
      not asked for ("also has a kite" is no removal of the reference's wave): dropped;
    - removal_in_reference: something cannot be removed from a reference that does not show it: a
      removal of something the reference caption does not mention (a blank reference mentions
      nothing), and that the instruction does not negate, is an addition;
    - instruction_negation: an addition of something the instruction negates ("no people") is a removal;
    - questions_follow_edits: a question about an edit's object expects what the edit says
      (a removal: no; anything else: yes);
    - questions_on_topic: a question about none of the words of the instruction, the reference or the
      edits (copied from an example) is dropped;
    - unplanned_negatives: a question expecting "no" about something no edit removes (the target keeps
      what the reference shows, and a blank reference shows nothing to remove) is dropped;
    - questions_from_edits: every addition and removal has a question ("Is there ...?").
    """
    checks = set(checks)
    unknown = checks - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown plan checks: {', '.join(sorted(unknown))} (known: {', '.join(CHECKS)})")
    reference = "" if caption.strip() == BLANK_CAPTION else caption
    edits = [dict(e) for e in plan.edits]
    fixes: list[str] = []
    if "edits_in_instruction" in checks:
        kept_edits = []
        for edit in edits:
            if edit["type"] in ("addition", "removal") and content_words(edit["text"]) \
                    and not mentions(edit["text"], instruction):
                fixes.append(f"dropped the {edit['type']} of {edit['text']!r}: the instruction does not ask for it")
            else:
                kept_edits.append(edit)
        edits = kept_edits
    for edit in edits:
        objects = content_words(edit["text"])
        if not objects:
            continue
        is_negated = negated(instruction, objects)
        if ("removal_in_reference" in checks and edit["type"] == "removal" and not is_negated
                and not mentions(edit["text"], reference)):
            edit["type"] = "addition"
            fixes.append(f"removal of {edit['text']!r}, which the reference does not show: made an addition")
        elif "instruction_negation" in checks and edit["type"] == "addition" and is_negated:
            edit["type"] = "removal"
            fixes.append(f"addition of {edit['text']!r}, which the instruction negates: made a removal")

    questions = [dict(q) for q in plan.questions]
    if "questions_follow_edits" in checks:
        for q in questions:
            edit = _edit_about(q["question"], edits)
            if edit is None:
                continue
            expected = "no" if edit["type"] == "removal" else "yes"
            if q["expected"] != expected:
                fixes.append(f"{q['question']!r} expected {q['expected']}, but the plan has a {edit['type']}: expects {expected}")
                q["expected"] = expected
    if "questions_on_topic" in checks:
        known = word_forms(instruction) | word_forms(reference) | {f for e in edits for f in word_forms(e["text"])}
        kept = []
        for q in questions:
            if any(forms(w) & known for w in content_words(q["question"])):
                kept.append(q)
            else:
                fixes.append(f"dropped {q['question']!r}: about nothing in the request")
        questions = kept
    if "unplanned_negatives" in checks:
        kept = []
        for q in questions:
            edit = _edit_about(q["question"], edits)
            if q["expected"] == "no" and (edit is None or edit["type"] != "removal"):
                fixes.append(f"dropped {q['question']!r} (expects no): no edit removes it")
            else:
                kept.append(q)
        questions = kept
    if "questions_from_edits" in checks and plan.planned:
        for edit in edits:
            if edit["type"] in ("addition", "removal") and _question_about(edit, questions) is None \
                    and len(questions) < MAX_QUESTIONS and content_words(edit["text"]):
                questions.append({"question": f"Is there {edit['text']}?", "expected": "no" if edit["type"] == "removal" else "yes"})
                fixes.append(f"added a question for the {edit['type']} of {edit['text']!r}")
    return Plan(edits, questions, plan.descriptions, plan.warnings, plan.fixes + fixes, plan.planned)


def _overlap(a: str, b: str) -> bool:
    """Whether two phrases share an object word."""
    theirs = {f for w in content_words(b) for f in forms(w)}
    return any(forms(w) & theirs for w in content_words(a))


def _edit_about(question: str, edits: list[dict[str, str]]) -> dict[str, str] | None:
    """The addition/removal edit whose object words the question mentions (the first such)."""
    return next((e for e in edits if e["type"] in ("addition", "removal") and _overlap(question, e["text"])), None)


def _question_about(edit: dict[str, str], questions: list[dict[str, str]]) -> dict[str, str] | None:
    return next((q for q in questions if _overlap(q["question"], edit["text"])), None)


def fallback_plan(caption: str, instruction: str, warning: str) -> Plan:
    return Plan([], [], [baseline_query(caption, instruction)], [warning])


def question_object(question: str) -> str:
    """The object a yes/no question asks about, as words ("Is there a wine glass?" -> "wine glass")."""
    return " ".join(content_words(question))
