"""A run folder's files, read back: the finished records of `lensgraph eval` (graphs/evaluation.py
writes them), for resuming, comparing and submitting.

    rankings.jsonl   one JSON record per finished query (a torn last line from a kill is ignored)
    run.json         what defines the run; "parts" names sub-runs over separate galleries
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def parts_of(out: Path) -> list[str]:
    """The sub-runs of a run folder over separate galleries (FashionIQ's categories), else []."""
    path = out / "run.json"
    return list(json.loads(path.read_text()).get("parts") or []) if path.is_file() else []


def read_records(out: Path) -> dict[str, dict[str, Any]]:
    """Finished queries of a run folder, by query id (a torn last line from a kill is ignored);
    those of all its sub-runs when it has parts."""
    out = Path(out)
    if parts := parts_of(out):
        return {qid: r for part in parts for qid, r in read_records(out / part).items()}
    path = out / "rankings.jsonl"
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[record["id"]] = record
    return records


def degraded(record: dict[str, Any]) -> bool:
    """A query that failed, or where a model call failed for good and a stage fell back (a server
    outage, say): `--redo-degraded` runs these again."""
    if record.get("error") or any(t.get("failures") for t in record.get("trace", [])):
        return True
    return any("gave up after" in w for w in record.get("warnings") or [])  # records written before "failures"
