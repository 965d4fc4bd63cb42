"""Stage diagnostics against the labels, from a run's per-query records (rankings.jsonl), so each
stage can be tuned on its own:

- plan: for queries labelled with an edit kind (add / remove / replace), how often the planned
  edits and the questions' expected answers agree with it;
- verify: how well the evidence separates correct from wrong candidates (AUC; accuracy of
  "evidence > 0.5" as a correct/wrong call);
- judge: how often it said Yes, and whether what it moved to rank 1 was correct;
- every ranking stage: the rank of the first correct image.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

KINDS = ("add", "remove", "replace")


def edits_agree(kind: str, edits: list[dict[str, str]]) -> bool:
    """add: an addition and no removal; remove: a removal and no addition; replace: a removal and an
    addition, or a modification."""
    types = {e.get("type") for e in edits or []}
    if kind == "add":
        return "addition" in types and "removal" not in types
    if kind == "remove":
        return "removal" in types and "addition" not in types
    if kind == "replace":
        return ("removal" in types and "addition" in types) or "modification" in types
    return False


def questions_agree(kind: str, questions: list[dict[str, str]]) -> bool:
    """add: a question expecting yes and none expecting no; remove: one expecting no; replace: one of each."""
    expected = [q.get("expected") for q in questions or []]
    if kind == "add":
        return "yes" in expected and "no" not in expected
    if kind == "remove":
        return "no" in expected
    if kind == "replace":
        return "yes" in expected and "no" in expected
    return False


def plan_agreement(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    labelled = [r for r in records if r.get("kind") in KINDS and not r.get("error")]
    if not labelled or not any(r.get("edits") for r in labelled):
        return None
    out: dict[str, Any] = {"queries": len(labelled)}
    for name, agree, field in (("edits", edits_agree, "edits"), ("questions", questions_agree, "questions")):
        out[name] = round(sum(agree(r["kind"], r.get(field) or []) for r in labelled) / len(labelled), 3)
        for kind in KINDS:
            of_kind = [r for r in labelled if r["kind"] == kind]
            if of_kind:
                out[f"{name}:{kind}"] = f"{sum(agree(kind, r.get(field) or []) for r in of_kind)}/{len(of_kind)}"
    out["fixed_by_checks"] = sum(1 for r in labelled if r.get("fixes"))
    return out


def auc(positive: list[float], negative: list[float]) -> float:
    a, b = np.array(positive), np.array(negative)
    return float(((a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()) / (len(a) * len(b)))


def candidate_evidence(record: dict[str, Any]) -> dict[str, float]:
    """Per verified candidate, the mean probability of the expected answers (older records: the
    fraction of matching answers)."""
    probabilities = record.get("probabilities")
    if probabilities:
        out = {}
        for cid, ps in probabilities.items():
            known = [p for p in ps if p is not None]
            if known:
                out[cid] = sum(known) / len(known)
        return out
    matches, questions = record.get("matches"), record.get("questions")
    if matches and questions:
        return {cid: n / len(questions) for cid, n in matches.items()}
    return {}


def verifier_separation(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Correct vs wrong candidates: mean evidence of each, the AUC (0.5 = a coin), and the accuracy
    of calling a candidate correct when its evidence is above 0.5."""
    correct: list[float] = []
    wrong: list[float] = []
    for r in records:
        targets = set(r["truth"].get("targets") or ())
        if not targets:
            continue
        for cid, value in candidate_evidence(r).items():
            (correct if cid in targets else wrong).append(value)
    if not correct or not wrong:
        return None
    right = sum(v > 0.5 for v in correct) + sum(v <= 0.5 for v in wrong)
    return {"correct": len(correct), "wrong": len(wrong),
            "evidence_correct": round(float(np.mean(correct)), 3), "evidence_wrong": round(float(np.mean(wrong)), 3),
            "auc": round(auc(correct, wrong), 3), "accuracy": round(right / (len(correct) + len(wrong)), 3)}


def judge_effect(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Acceptance rate, and what the judge did to rank 1 (against the ranking it was given)."""
    judged = [r for r in records if r.get("verdicts")]
    if not judged:
        return None
    verdicts = [v for r in judged for v in r["verdicts"].values()]
    yes = sum(1 for v in verdicts if v.get("verdict") is True)
    moved_correct = moved_wrong = 0
    for r in judged:
        rankings = r.get("rankings", {})
        before = rankings.get("verify") or rankings.get("retrieve") or []
        after = rankings.get("judge") or []
        if before and after and before[0] != after[0]:
            if after[0] in set(r["truth"].get("targets") or ()):
                moved_correct += 1
            else:
                moved_wrong += 1
    p_yes = [v["p_yes"] for v in verdicts if v.get("p_yes") is not None]
    return {"judged": len(verdicts), "said_yes": round(yes / len(verdicts), 3) if verdicts else 0.0,
            "mean_p_yes": round(float(np.mean(p_yes)), 3) if p_yes else None,
            "new_rank1_correct": moved_correct, "new_rank1_wrong": moved_wrong}


def first_correct_rank(records: list[dict[str, Any]], stage: str, depth: int = 50) -> dict[str, Any] | None:
    """Median rank of the first correct image after `stage` (beyond the kept depth counts as depth + 1)."""
    ranks = []
    for r in records:
        targets = set(r["truth"].get("targets") or ())
        ranking = r.get("rankings", {}).get(stage)
        if not targets or ranking is None:
            continue
        ranks.append(next((n for n, i in enumerate(ranking, 1) if i in targets), depth + 1))
    if not ranks:
        return None
    return {"median": statistics.median(ranks), "mean": round(float(np.mean(ranks)), 2),
            "beyond": sum(1 for x in ranks if x > depth)}


def diagnostics(records: list[dict[str, Any]], stages: list[str]) -> dict[str, Any]:
    return {
        "plan": plan_agreement(records),
        "verify": verifier_separation(records),
        "judge": judge_effect(records),
        "first_correct_rank": {s: v for s in stages if (v := first_correct_rank(records, s))},
    }
