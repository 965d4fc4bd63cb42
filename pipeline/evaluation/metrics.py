"""Retrieval metrics over ranked lists of image ids: pure functions, no I/O.

A ranking is a sequence of dataset image ids, best first. Ties cannot occur: a list has an order,
and whoever produced it decided the order of equal scores. A duplicated id counts once, at its
first position (later copies are dropped before cutting at k). A k larger than the ranking looks
at the whole ranking. Per-query functions raise ValueError for an empty ground truth (a test split)
or k < 1; `summarize` skips queries without ground truth and reports how many it skipped.
Rankings are scored as given: removing the reference image is the retrieval method's job (CIRR's
protocol removes it; FashionIQ's and CIRCO's keep it, see `Dataset.keep_reference`). `check_ids`
catches rankings whose ids are not the gallery's (ints, zero-padded names), which would score 0.

Definitions follow the official evaluation code:
- Recall@K (CIRR, FashionIQ, Flickr30K/MSCOCO): 1 if a correct image is in the top K.
- Recall_subset@K (CIRR, Cuberick-Orion/CIRPLANT and SEARLE): the ranking restricted to the
  query's img_set members, reference removed. A result row's "subset_ranking" (the members in the
  model's order over the whole gallery) is used when present, since a cut ranking can miss members.
- AP@K (CIRCO src/evaluation.py): sum over the top K of precision@i at each correct position,
  divided by min(K, number of ground truths); mAP@K is its mean.
- Hits@K per round (ChatIR eval.py `cumulative_hits_per_round`): a dialogue counts as a hit at
  round r once its target has been in the top K at any round <= r.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

CIR_MAP_KS = (5, 10, 25, 50)
CIR_RECALL_KS = (1, 5, 10, 50)
SUBSET_KS = (1, 2, 3)
T2I_RECALL_KS = (1, 5, 10)
CHAT_K = 10


def _unique(ranking: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ranking))


def _check(targets: Collection[str], k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not targets:
        raise ValueError("no ground truth for this query (a test split?)")


def recall_at_k(ranking: Sequence[str], targets: Collection[str], k: int) -> float:
    """1.0 if any of `targets` is among the first k distinct ids of `ranking`, else 0.0."""
    _check(targets, k)
    wanted = set(targets)
    return 1.0 if any(i in wanted for i in _unique(ranking)[:k]) else 0.0


def recall_subset_at_k(
    ranking: Sequence[str], target: str, subset: Collection[str], reference: str | None, k: int
) -> float:
    """CIRR Recall_subset@K: recall of `target` in `ranking` restricted to the `subset` members
    other than `reference`. Pass the full ranking (or one long enough to hold the subset)."""
    _check([target] if target else [], k)
    members = set(subset) - {reference}
    restricted = [i for i in _unique(ranking) if i in members]
    return 1.0 if target in restricted[:k] else 0.0


def average_precision_at_k(ranking: Sequence[str], targets: Collection[str], k: int) -> float:
    """CIRCO's AP@K: (sum of precision@i over correct positions i <= k) / min(k, len(targets))."""
    _check(targets, k)
    wanted = set(targets)
    hits = 0
    total = 0.0
    for position, image_id in enumerate(_unique(ranking)[:k], start=1):
        if image_id in wanted:
            hits += 1
            total += hits / position
    return total / min(k, len(wanted))


def map_at_k(rankings: Sequence[Sequence[str]], targets: Sequence[Collection[str]], k: int) -> float:
    """Mean AP@K over queries (rankings[i] is scored against targets[i])."""
    if len(rankings) != len(targets):
        raise ValueError(f"{len(rankings)} rankings for {len(targets)} ground-truth sets")
    if not rankings:
        raise ValueError("no queries")
    return sum(average_precision_at_k(r, t, k) for r, t in zip(rankings, targets, strict=True)) / len(rankings)


def hits_at_k_per_round(rankings_per_round: list[Sequence[str]], target: str, k: int = CHAT_K) -> list[float]:
    """ChatIR Hits@K, cumulative: entry r is 1.0 if `target` was in the top k at any round <= r."""
    _check([target] if target else [], k)
    found = False
    out = []
    for ranking in rankings_per_round:
        found = found or target in _unique(ranking)[:k]
        out.append(1.0 if found else 0.0)
    return out


def check_ids(rankings: Iterable[Sequence[Any]], gallery: Collection[str], what: str = "rankings") -> int:
    """Raise when ranked ids are not strings or none of them is a gallery id (they would score 0
    without a word); return how many ranked ids are not in the gallery (a partial index, say)."""
    ranked = [i for ranking in rankings for i in ranking]
    wrong_type = next((i for i in ranked if not isinstance(i, str)), None)
    if wrong_type is not None:
        raise ValueError(f"{what}: image ids must be strings (the dataset's ids), got {type(wrong_type).__name__} {wrong_type!r}")
    unknown = [i for i in ranked if i not in gallery]
    if ranked and len(unknown) == len(ranked):
        example = next(iter(gallery), "?")
        raise ValueError(
            f"{what}: none of the {len(ranked)} ranked ids is a gallery image id (ranked ids look like "
            f"{unknown[0]!r}, gallery ids like {example!r}); rank by the dataset's own ids"
        )
    return len(unknown)


# ---- summaries ---------------------------------------------------------------------------------


def results_for(queries: Iterable[Any], rankings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Result rows for `summarize` from dataset queries (lensgraph.pipeline.evaluation.datasets.Query) and their
    rankings (query id -> ranking; for chat, query id -> one ranking per round). Queries without
    a ranking get an empty one (they count as misses)."""
    rows = []
    for q in queries:
        row: dict[str, Any] = {
            "id": q.id,
            "targets": list(q.targets),
            "target": q.extra.get("target"),
            "kind": q.kind,
            "reference": q.reference,
            "subset": list(q.subset),
            "aspects": list(q.extra.get("semantic_aspects") or ()),
        }
        if q.dialogue:
            row["rankings"] = [list(r) for r in rankings.get(q.id, [])]
        else:
            row["ranking"] = list(rankings.get(q.id, []))
        rows.append(row)
    return rows


def _task_of(results: Sequence[Mapping[str, Any]]) -> str:
    if any("rankings" in r for r in results):
        return "chat"
    if any(r.get("reference") for r in results):
        return "cir"
    return "t2i"


def _scores(result: Mapping[str, Any], task: str, map_ks, recall_ks, subset_ks, hits_k) -> dict[str, float]:
    targets = list(result["targets"])
    primary = result.get("target")
    recall_targets = [primary] if primary else targets
    if task == "chat":
        rounds = hits_at_k_per_round(list(result.get("rankings") or []), recall_targets[0], hits_k)
        return {f"Hits@{hits_k}@r{r}": v for r, v in enumerate(rounds)}
    ranking = list(result.get("ranking") or [])
    scores: dict[str, float] = {}
    if task == "cir":
        for k in map_ks:
            scores[f"mAP@{k}"] = average_precision_at_k(ranking, targets, k)
    for k in recall_ks:
        scores[f"R@{k}"] = recall_at_k(ranking, recall_targets, k)
    if task == "cir" and result.get("subset"):
        # the members' order over the whole gallery when the producer kept it (a top-50 cut loses members)
        subset_ranking = list(result.get("subset_ranking") or ranking)
        for k in subset_ks:
            scores[f"Rs@{k}"] = recall_subset_at_k(
                subset_ranking, recall_targets[0], result["subset"], result.get("reference"), k
            )
    return scores


def query_scores(result: Mapping[str, Any], task: str) -> dict[str, float]:
    """One query's metrics (fractions, not percent) with the standard cut-offs of its task."""
    return _scores(result, task, CIR_MAP_KS, CIR_RECALL_KS if task == "cir" else T2I_RECALL_KS, SUBSET_KS, CHAT_K)


def _mean(rows: list[dict[str, float]], digits: int) -> dict[str, float]:
    keys = list(dict.fromkeys(key for row in rows for key in row))
    out: dict[str, float] = {}
    for key in keys:
        values = [row[key] for row in rows if key in row]
        out[key] = round(100.0 * sum(values) / len(values), digits)
    return out


def summarize(
    results: Sequence[Mapping[str, Any]],
    ks: Sequence[int] | None = None,
    *,
    task: str | None = None,
    map_ks: Sequence[int] = CIR_MAP_KS,
    subset_ks: Sequence[int] = SUBSET_KS,
    digits: int = 2,
) -> dict[str, float]:
    """The standard metrics of a task, in percent (0-100), rounded to `digits`.

    `results`: rows with "targets" (all correct ids), optional "target" (the primary one, used for
    recall: CIRCO's target_img_id), "ranking" (or, for chat, "rankings": one per round), and for
    CIR "reference", optional "subset" (CIRR) and "kind". See `results_for`.
    `task`: "cir" -> mAP@5/10/25/50, R@1/5/10/50 (+ Rs@1/2/3 when subsets are given);
    "t2i" -> R@1/5/10; "chat" -> Hits@10 per round ("Hits@10@r0", ...). Inferred when None.
    `ks` replaces the recall cut-offs (for chat: its first value is the Hits@K cut-off).
    Also returned: "n" (queries scored) and "skipped" (queries without ground truth), and for each
    query kind, the same metrics under "<kind>:<metric>" with "<kind>:n"; for rows with "aspects"
    (CIRCO's semantic_aspects), "aspect <name>:mAP@10" and "aspect <name>:n". A chat round's Hits is
    averaged over the dialogues that have a ranking for that round.
    """
    task = task or _task_of(results)
    if task not in ("cir", "t2i", "chat"):
        raise ValueError(f"task must be 'cir', 't2i' or 'chat', got {task!r}")
    recall_ks = tuple(ks) if ks else (CIR_RECALL_KS if task == "cir" else T2I_RECALL_KS)
    hits_k = ks[0] if ks else CHAT_K
    scored = [r for r in results if r.get("targets")]
    summary: dict[str, float] = {"n": len(scored), "skipped": len(results) - len(scored)}
    if not scored:
        return summary
    rows = [_scores(r, task, map_ks, recall_ks, subset_ks, hits_k) for r in scored]
    summary.update(_mean(rows, digits))
    aspects = list(dict.fromkeys(a for r in scored for a in r.get("aspects") or ()))
    for aspect in aspects:  # CIRCO's server: mAP@10 over the queries that have the semantic aspect
        chosen = [row for r, row in zip(scored, rows, strict=True) if aspect in (r.get("aspects") or ())]
        summary[f"aspect {aspect}:n"] = len(chosen)
        summary[f"aspect {aspect}:mAP@10"] = _mean([{"m": row["mAP@10"]} for row in chosen if "mAP@10" in row], digits).get("m", 0.0)
    kinds = list(dict.fromkeys(r.get("kind") or "" for r in scored))
    if len(kinds) > 1 or kinds != [""]:
        for kind in kinds:
            chosen = [row for r, row in zip(scored, rows, strict=True) if (r.get("kind") or "") == kind]
            label = kind or "none"
            summary[f"{label}:n"] = len(chosen)
            summary.update({f"{label}:{key}": v for key, v in _mean(chosen, digits).items()})
    return summary
