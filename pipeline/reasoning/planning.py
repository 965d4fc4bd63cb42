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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lensgraph.pipeline.models.jsonparse import extract_json_object
from lensgraph.pipeline.reasoning.lexicon import Lexicon
from lensgraph.pipeline.reasoning.objects import content_words, forms, negated, request_language, request_objects, word_forms, word_mentions
from lensgraph.pipeline.reasoning.replies import BLANK_CAPTION, baseline_query, parse_reasoning, questions_of

MAX_QUESTIONS = 4
POSITIVE = ("addition", "modification", "retention", "comparison")  # what a target still shows

Mentions = Callable[[str, str], bool]  # (phrase, text) -> does the text mention it


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
    derived: bool = False
    """Whether the questions follow from the edits (the compact plan): then they are derived again
    after the checks have changed the edits."""

    def as_state(self) -> dict[str, Any]:
        """The graph's update. Questions only when planned: their absence sends the graph to propose."""
        state: dict[str, Any] = {"edits": self.edits, "descriptions": self.descriptions}
        if self.planned:
            state["questions"] = self.questions
        return state


COMPACT = {"add": "addition", "remove": "removal", "change": "modification"}


def parse_compact(data: dict[str, Any], caption: str, instruction: str) -> Plan:
    """The default prompt's compact plan, {"add": [...], "remove": [...], "change": [...], "target": "..."}:
    as few generated tokens as the search needs. The questions follow from the edits ("Is there X?",
    a removal expecting no), so the model does not write them out."""
    edits = [{"type": kind, "text": str(item).strip()}
             for key, kind in COMPACT.items() for item in (data.get(key) or []) if str(item).strip()]
    target = str(data.get("target") or "").strip()
    warnings = [] if target else ["plan: reply had no target description; searching with the caption + instruction"]
    return Plan(edits, questions_for(edits), [target or baseline_query(caption, instruction)], warnings, derived=True)


def question_for(edit: dict[str, str]) -> dict[str, str]:
    """"Is there X?" for an edit's thing, with the answer the target gives (a removal: no)."""
    return {"question": f"Is there {edit['text']}?", "expected": "no" if edit["type"] == "removal" else "yes"}


def questions_for(edits: list[dict[str, str]]) -> list[dict[str, str]]:
    """One question per thing added, removed or changed."""
    return [question_for(e) for e in edits if e["type"] in COMPACT.values() and content_words(e["text"])][:MAX_QUESTIONS]


def parse_plan(text: str, caption: str, instruction: str) -> Plan:
    """A plan from the reply: the compact form, or edits + questions + descriptions (older and
    experimental prompt sets). Missing descriptions fall back to the caption + instruction, missing
    questions are derived from the edits (by `check_plan`), each with a warning."""
    data = extract_json_object(text) or {}
    if any(isinstance(data.get(key), list) for key in COMPACT):
        return parse_compact(data, caption, instruction)
    reasoning = parse_reasoning(text, caption, instruction)  # edits + descriptions, tolerant
    warnings = [reasoning.warning] if reasoning.warning else []
    questions = questions_of(data)
    planned = "questions" in data
    if planned and not questions and reasoning.value["edits"]:
        warnings.append("plan: reply had no usable questions; asking one per edit instead")
    return Plan(reasoning.value["edits"], questions[:MAX_QUESTIONS], reasoning.value["descriptions"], warnings,
                planned=planned)


CHECKS = ("edits_in_instruction", "request_objects", "removal_in_reference", "instruction_negation",
          "questions_follow_edits", "questions_on_topic", "unplanned_negatives", "questions_from_edits")
DEFAULT_CHECKS = CHECKS
"""The checks on by default: all of them, each measured out of fold on coco-mini dev and its
paraphrase sets (bench/RESULTS.md). removal_in_reference reads a caption's silence as absence, which
alone is weak evidence (captions are never complete): it acts only when the request itself gives no
sign of a removal ("without", "instead of", "swap ... for", "is gone", ...)."""
READS_REQUEST = frozenset({"edits_in_instruction", "request_objects", "removal_in_reference", "instruction_negation"})
"""The checks that read the request's own words (English ones): left out for a request in another
language, whose plan (asked for in English) is the only reading of it."""


def check_plan(plan: Plan, caption: str, instruction: str, mentions: Mentions = word_mentions,
               checks: Iterable[str] = DEFAULT_CHECKS, lexicon: Lexicon | None = None) -> Plan:
    """Repair what contradicts itself or what is known, recording each change in `plan.fixes`:

    - edits_in_instruction: an addition or removal of something the instruction does not mention was
      not asked for ("also has a kite" is no removal of the reference's wave): dropped;
    - request_objects: in a composed request, a thing the request names (WordNet's physical nouns,
      `lexicon`) that no edit covers is added as an addition, or a removal where the request wants it
      gone ("without", "instead of", "is gone"); an addition of a thing the request wants gone becomes
      a removal (a text-to-image request names its whole scene: the plan picks what to check);
    - removal_in_reference: something cannot be removed from a reference that does not show it: a
      removal of something the reference caption does not mention (a blank reference mentions
      nothing) is an addition, unless the request itself says to remove it (`negated`: a caption's
      silence alone is weak evidence, the request's words are strong);
    - instruction_negation: an addition of something the instruction negates ("no people") is a removal;
    - questions_follow_edits: a question about an edit's object expects what the edit says
      (a removal: no; anything else: yes);
    - questions_on_topic: a question about none of the words of the instruction, the reference or the
      edits (copied from an example) is dropped;
    - unplanned_negatives: a question expecting "no" about something no edit removes (the target keeps
      what the reference shows, and a blank reference shows nothing to remove) is dropped;
    - questions_from_edits: every addition and removal has a question ("Is there ...?").

    The checks in READS_REQUEST are left out when the request is not in English (`request_language`).
    """
    checks = set(checks)
    unknown = checks - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown plan checks: {', '.join(sorted(unknown))} (known: {', '.join(CHECKS)})")
    reference = "" if caption.strip() == BLANK_CAPTION else caption
    edits = [dict(e) for e in plan.edits]
    fixes: list[str] = []
    language = request_language(instruction) if checks & READS_REQUEST else None
    if language:
        fixes.append(f"the request reads as {language}, not English: left out the checks that read its words "
                     f"({', '.join(sorted(checks & READS_REQUEST))})")
        checks -= READS_REQUEST
    if "edits_in_instruction" in checks:
        kept_edits = []
        for edit in edits:
            if edit["type"] in ("addition", "removal") and content_words(edit["text"]) \
                    and not mentions(edit["text"], instruction):
                fixes.append(f"dropped the {edit['type']} of {edit['text']!r}: the instruction does not ask for it")
            else:
                kept_edits.append(edit)
        edits = kept_edits
    if "request_objects" in checks and reference:  # a composed request: its things are its edits
        for thing in request_objects(instruction, lexicon):
            wanted = "removal" if thing.removal else "addition"
            edit = next((e for e in edits if e["type"] in ("addition", "removal")
                         and (mentions(thing.text, e["text"]) or mentions(e["text"], thing.text))), None)
            if edit is None:
                edits.append({"type": wanted, "text": thing.text})
                fixes.append(f"the request names {thing.text!r}, which the plan left out: made it an {wanted}")
            elif wanted == "removal" and edit["type"] == "addition":
                edit["type"] = "removal"
                fixes.append(f"addition of {edit['text']!r}, which the request wants gone: made a removal")
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

    questions = questions_for(edits) if plan.derived else [dict(q) for q in plan.questions]
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
                questions.append(question_for(edit))
                fixes.append(f"added a question for the {edit['type']} of {edit['text']!r}")
    return Plan(edits, questions, plan.descriptions, plan.warnings, plan.fixes + fixes, plan.planned, plan.derived)


def request_words(instruction: str, edits: list[dict[str, str]]) -> str:
    """What the request names, in words the matching reads: the request itself, or, for one in
    another language, the plan's English reading of it (its edits)."""
    if request_language(instruction) is None:
        return instruction
    return "; ".join(e["text"] for e in edits)


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
