"""Prediction files for the benchmarks' test servers (their test ground truth is withheld).

CIRR (github.com/Cuberick-Orion/CIRR, Test-split_server.md and demo_files/): one JSON object per
metric, {"version": "rc2", "metric": "recall", "<pairid>": [top-50 image names]} and
{"version": "rc2", "metric": "recall_subset", "<pairid>": [top-3 names]}; max 5 MB each.
CIRCO (github.com/miccunifi/CIRCO, README "Submission Format", submission_examples/):
{"<query id>": [top-50 COCO image ids as integers]}, for every test query (ids 0..799).

Writers take query id -> ranking (dataset image ids, best first) and the dataset's queries; they
return the JSON-able dict. A ranking's duplicates are dropped and the query's reference is removed
(CIRR's protocol removes it, e.g. SEARLE's generate_test_submission.py; in CIRCO it is never a
ground truth, so dropping it cannot cost anything). A query without a ranking is an error: the
servers reject incomplete files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lensgraph.pipeline.errors import LensgraphError

CIRR_VERSION = "rc2"


def _ranked(query: Any, rankings: Mapping[str, Sequence[str]]) -> list[str]:
    if query.id not in rankings:
        raise LensgraphError(f"No ranking for query {query.id}: the test server needs every query.")
    return [i for i in dict.fromkeys(rankings[query.id]) if i != query.reference]


def _check_complete(queries: Sequence[Any], rankings: Mapping[str, Sequence[str]]) -> None:
    absent = [q.id for q in queries if q.id not in rankings]
    if absent:
        shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
        raise LensgraphError(
            f"No ranking for {len(absent)} of {len(queries)} queries ({shown}): the test server needs every query."
        )


def cirr_submission(
    rankings: Mapping[str, Sequence[str]], queries: Iterable[Any], top: int = 50, version: str = CIRR_VERSION
) -> dict[str, Any]:
    """CIRR's Recall@K file: pairid -> the top-`top` image names, reference excluded."""
    queries = list(queries)
    _check_complete(queries, rankings)
    data: dict[str, Any] = {"version": version, "metric": "recall"}
    for q in queries:
        data[str(q.extra.get("pairid", q.id))] = _ranked(q, rankings)[:top]
    return data


def cirr_subset_submission(
    rankings: Mapping[str, Sequence[str]], queries: Iterable[Any], top: int = 3, version: str = CIRR_VERSION
) -> dict[str, Any]:
    """CIRR's Recall_subset@K file: pairid -> the top-`top` of the img_set members other than the
    reference, in the model's order over the whole gallery. `rankings` must order every member:
    pass a run's `subset_rankings` (the members scored explicitly at retrieval), not a top-50 cut,
    where a member ranked below 50 would be missing."""
    queries = list(queries)
    _check_complete(queries, rankings)
    data: dict[str, Any] = {"version": version, "metric": "recall_subset"}
    for q in queries:
        members = [m for m in dict.fromkeys(q.subset) if m != q.reference]
        if not members:
            raise LensgraphError(f"CIRR query {q.id} has no img_set members: is this CIRR?")
        chosen = set(members)
        ordered = [i for i in _ranked(q, rankings) if i in chosen]
        if len(ordered) < min(top, len(members)):
            raise LensgraphError(
                f"CIRR query {q.id}: the ranking orders {len(ordered)} of its {len(members)} img_set members; "
                "Recall_subset needs their order over the whole gallery (a run's subset_rankings)."
            )
        data[str(q.extra.get("pairid", q.id))] = ordered[:top]
    return data


def circo_submission(
    rankings: Mapping[str, Sequence[str]], queries: Iterable[Any], top: int = 50
) -> dict[str, list[int]]:
    """CIRCO's file: query id -> the top-`top` COCO image ids, as integers (as in the README
    example; the server's evaluation casts them with int)."""
    queries = list(queries)
    _check_complete(queries, rankings)
    data: dict[str, list[int]] = {}
    for q in queries:
        try:
            data[str(q.id)] = [int(i) for i in _ranked(q, rankings)[:top]]
        except ValueError:
            raise LensgraphError(f"CIRCO query {q.id}: image ids must be COCO ids (digits).") from None
    return data


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as compact JSON (the CIRR server limits files to 5 MB), creating parent folders;
    written to a temporary file first, so a failed write leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)
    return path
