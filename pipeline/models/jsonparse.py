"""Getting one JSON object out of a model reply: fenced block, then outermost braces, then
json-repair. Returns None when nothing usable is there; callers fall back and say so."""

from __future__ import annotations

import json
import re
from typing import Any

FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_json_object(text: str) -> dict[str, Any] | None:
    candidates = [m.group(1) for m in FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    candidates.append(text)
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(value, dict):
            return value
    if start == -1:
        return None
    import json_repair

    try:
        value = json_repair.loads(text[start:])
    except Exception:  # json-repair is best effort by design
        return None
    if isinstance(value, list):  # several objects: take the first dict
        value = next((v for v in value if isinstance(v, dict)), None)
    return value if isinstance(value, dict) and value else None
