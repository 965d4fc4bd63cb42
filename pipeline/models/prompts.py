"""Prompt sets: one text file per stage, with `{name}` placeholders.

A set is a folder (`prompts/default/`, `prompts/imagescope/`, `prompts/cireval/`, or any
`--prompts DIR`). A set only holds the files it changes; the rest come from `prompts/default/`.
A prompt may have a JSON Schema beside it (`reason.schema.json`): servers that can constrain their
output to a schema are asked to; the schema comes from the folder its prompt came from. Placeholders are lowercase
identifiers in braces; any other brace (a JSON example) is literal text. A missing or unknown
placeholder is an error when the set is loaded, not in the middle of a run.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensgraph.pipeline.errors import LensgraphError

PROMPTS_DIR = Path(importlib.resources.files("lensgraph.prompts"))  # installed as package data, or this checkout
PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")

# stage -> the placeholders its template must use (and the only ones it may use)
STAGES: dict[str, frozenset[str]] = {
    "caption": frozenset(),
    "translate": frozenset({"instruction"}),
    "reason": frozenset({"caption", "instruction"}),
    "propose": frozenset({"caption", "instruction", "edits"}),
    "verify": frozenset({"question"}),
    "verify_all": frozenset({"questions"}),
    "judge": frozenset({"caption", "instruction"}),
    "judge_list": frozenset({"caption", "instruction", "count"}),
    "caption_vision": frozenset({"descriptions", "request"}),
    "chat": frozenset({"dialogue", "description", "message"}),
}


@dataclass(frozen=True)
class Prompt:
    stage: str
    text: str
    source: str
    schema: dict[str, Any] | None = None

    @property
    def wants_json(self) -> bool:
        """A prompt that asks for JSON is sent in the backend's JSON mode; one that asks for
        free text (CIReVL's "Edited Description:") is not, or JSON mode would garble it."""
        return "JSON" in self.text or self.schema is not None

    @property
    def sha256(self) -> str:
        schema = json.dumps(self.schema, sort_keys=True) if self.schema is not None else ""
        return hashlib.sha256((self.text + schema).encode()).hexdigest()

    def render(self, **values: str) -> str:
        return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), self.text)


@dataclass(frozen=True)
class PromptSet:
    name: str
    prompts: dict[str, Prompt]

    def __getitem__(self, stage: str) -> Prompt:
        return self.prompts[stage]

    def hashes(self) -> dict[str, str]:
        return {stage: p.sha256 for stage, p in self.prompts.items()}


def resolve_set(name_or_dir: str | Path) -> Path:
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    builtin = PROMPTS_DIR / str(name_or_dir)
    if builtin.is_dir():
        return builtin
    known = ", ".join(sorted(p.name for p in PROMPTS_DIR.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))))
    raise LensgraphError(f"Prompt set {name_or_dir!r} is neither a folder nor a built-in set ({known}).")


def load_prompt_set(name_or_dir: str | Path = "default") -> PromptSet:
    folder = resolve_set(name_or_dir)
    default = PROMPTS_DIR / "default"
    prompts = {}
    for stage, required in STAGES.items():
        path = folder / f"{stage}.txt"
        if not path.is_file():
            path = default / f"{stage}.txt"
        if not path.is_file():
            raise LensgraphError(f"Prompt set {folder} has no {stage}.txt, and neither does {default}.")
        text = path.read_text(encoding="utf-8").strip() + "\n"
        used = set(PLACEHOLDER.findall(text))
        if missing := required - used:
            raise LensgraphError(f"{path}: missing placeholder(s) {', '.join('{' + m + '}' for m in sorted(missing))}.")
        if unknown := used - required:
            raise LensgraphError(
                f"{path}: unknown placeholder(s) {', '.join('{' + u + '}' for u in sorted(unknown))}; "
                f"{stage} takes {', '.join('{' + r + '}' for r in sorted(required)) or 'none'}."
            )
        schema_path = path.with_name(f"{stage}.schema.json")
        try:
            schema = json.loads(schema_path.read_text(encoding="utf-8")) if schema_path.is_file() else None
        except json.JSONDecodeError as e:
            raise LensgraphError(f"{schema_path}: not valid JSON ({e}).") from None
        prompts[stage] = Prompt(stage, text, str(path), schema)
    return PromptSet(folder.name, prompts)
