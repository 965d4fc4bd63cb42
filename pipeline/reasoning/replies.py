"""The reasoning stages' logic as plain functions: parsing model replies and falling back when they
are unusable. Re-ranking is in pipeline/reasoning/evidence.py, the planning call in pipeline/reasoning/planning.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lensgraph.pipeline.models.jsonparse import extract_json_object

EDIT_TYPES = ("addition", "removal", "modification", "comparison", "retention")
GRANULARITIES = ("core", "attributes", "full")
BLANK_CAPTION = "A blank image."


@dataclass(frozen=True)
class Parsed:
    value: Any
    warning: str | None = None


def baseline_query(caption: str, instruction: str) -> str:
    """The no-LLM query: the reference caption and the instruction as one text."""
    if not caption or caption == BLANK_CAPTION:
        return instruction.strip()
    return f"{caption.strip()} {instruction.strip()}"


def parse_reasoning(text: str, caption: str, instruction: str) -> Parsed:
    """{'edits': [...], 'descriptions': [...]} from the reason stage's reply.

    Accepts the JSON format of the default prompts and a CIReVL-style "Edited Description:" line.
    Unusable replies fall back to the no-LLM query, with a warning.
    """
    data = extract_json_object(text)
    if data is not None:
        edits = [
            {"type": str(e.get("type", "")).lower().strip(), "text": str(e.get("text", "")).strip()}
            for e in data.get("edits") or []
            if isinstance(e, dict) and str(e.get("text", "")).strip()
        ]
        edits = [e if e["type"] in EDIT_TYPES else {**e, "type": "modification"} for e in edits]
        raw = data.get("descriptions") or data.get("target_descriptions") or {}
        if isinstance(raw, dict):
            descriptions = [str(raw[g]).strip() for g in GRANULARITIES if str(raw.get(g) or "").strip()]
        elif isinstance(raw, list):
            descriptions = [str(d).strip() for d in raw if str(d).strip()]
        else:
            descriptions = [str(raw).strip()] if str(raw).strip() else []
        if not descriptions:  # a single rewrite given as JSON ({"Edited Description": ...} and the like)
            single = next((v for k, v in data.items() if isinstance(v, str) and v.strip()
                           and re.sub(r"[\s_-]", "", k.lower()) in ("editeddescription", "description", "targetdescription")), None)
            descriptions = [single.strip()] if single else []
        if descriptions:
            return Parsed({"edits": edits, "descriptions": descriptions})
    match = re.search(r"edited description\s*:\s*(.+)", text, re.IGNORECASE)
    if match and match.group(1).strip():
        return Parsed({"edits": [], "descriptions": [match.group(1).strip().splitlines()[0].strip()]})
    fallback = baseline_query(caption, instruction)
    return Parsed(
        {"edits": [], "descriptions": [fallback]},
        f"reason: reply had no usable descriptions; searching with the caption + instruction instead "
        f"(reply began: {text.strip()[:80]!r})",
    )


def join_turns(previous: str, message: str) -> str:
    """A dialogue's turns as one description, as ChatIR's text retrievers read a dialogue."""
    return ", ".join(t for t in (previous.strip(), message.strip()) if t)


def parse_refined_description(text: str, previous: str, message: str) -> Parsed:
    """The chat stage's new target description; unusable replies append the message to the previous one."""
    data = extract_json_object(text)
    description = str((data or {}).get("description") or "").strip()
    if description:
        return Parsed(description)
    fallback = join_turns(previous, message)
    return Parsed(fallback, f"chat: reply had no description; appending the message instead (began: {text.strip()[:80]!r})")


def questions_of(data: dict[str, Any] | None) -> list[dict[str, str]]:
    """The {'question', 'expected': 'yes'|'no'} items of a parsed reply's "questions" list."""
    questions = []
    for item in (data or {}).get("questions") or []:
        if not isinstance(item, dict):
            continue
        question = str(item.get("question", "")).strip()
        expected = str(item.get("expected", item.get("answer", "yes"))).strip().lower()
        if question:
            questions.append({"question": question, "expected": "no" if expected.startswith("n") else "yes"})
    return questions


def parse_questions(text: str, edits: list[dict[str, str]], limit: int = 6) -> Parsed:
    """[{'question', 'expected': 'yes'|'no'}] from the propose stage's reply. Removals expect no."""
    questions = questions_of(extract_json_object(text))
    if questions:
        return Parsed(questions[:limit])
    # Fallback: one question per edit, from the edit itself.
    fallback = [
        {"question": f"Does the image show {e['text']}?", "expected": "no" if e["type"] == "removal" else "yes"}
        for e in edits
        if e["type"] in ("addition", "removal")
    ]
    warning = f"propose: reply had no usable questions (began: {text.strip()[:80]!r})"
    return Parsed(fallback[:limit], warning + ("; asking one question per edit instead" if fallback else "; skipping verification"))


def parse_yes_no(text: str) -> bool | None:
    """The first yes/no word of a reply, or None when there is none."""
    match = re.search(r"\b(yes|no)\b", text, re.IGNORECASE)
    return None if match is None else match.group(1).lower() == "yes"


def parse_numbered_yes_no(text: str, n: int) -> list[bool | None]:
    """Answers to n numbered questions asked in one call: by line number where the reply numbers
    them, else the yes/no words in order; missing answers are None."""
    answers: list[bool | None] = [None] * n
    numbered = re.findall(r"^\W*(\d+)\W+.*?\b(yes|no)\b", text, re.IGNORECASE | re.MULTILINE)
    if numbered:
        for number, word in numbered:
            if 1 <= int(number) <= n and answers[int(number) - 1] is None:
                answers[int(number) - 1] = word.lower() == "yes"
        return answers
    words = re.findall(r"\b(yes|no)\b", text, re.IGNORECASE)
    for i, word in enumerate(words[:n]):
        answers[i] = word.lower() == "yes"
    return answers


def parse_verdict(text: str) -> bool | None:
    """The judge's "ANSWER: Yes/No" (the last one, since the judge reasons first)."""
    matches = re.findall(r"answer\s*[:：]\s*\**\s*(yes|no)\b", text, re.IGNORECASE)
    if matches:
        return matches[-1].lower() == "yes"
    return None


def side_by_side(reference: Any, candidate: Any, height: int = 384) -> Any:
    """Reference | candidate on one canvas, labelled, as the judge sees them."""
    from PIL import Image, ImageDraw

    def fit(img: Any) -> Any:
        return img.resize((max(1, round(img.width * height / img.height)), height))

    left, right = fit(reference), fit(candidate)
    band, gap = 28, 12
    canvas = Image.new("RGB", (left.width + gap + right.width, height + band), (255, 255, 255))
    canvas.paste(left, (0, band))
    canvas.paste(right, (left.width + gap, band))
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 6), "REFERENCE", fill=(0, 0, 0))
    draw.text((left.width + gap + 6, 6), "CANDIDATE", fill=(0, 0, 0))
    return canvas


def blank_image(size: int = 384) -> Any:
    from PIL import Image

    return Image.new("RGB", (size, size), (255, 255, 255))
