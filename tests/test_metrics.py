"""Metrics on hand-computed cases, against CIRCO's official AP formula, and on coco-mini."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lensgraph.pipeline.evaluation.datasets import load_dataset
from lensgraph.pipeline.evaluation.metrics import (
    average_precision_at_k,
    hits_at_k_per_round,
    map_at_k,
    recall_at_k,
    recall_subset_at_k,
    results_for,
    summarize,
)

# ---- Recall@K --------------------------------------------------------------------------------


def test_recall_at_k():
    ranking = ["a", "b", "c", "d"]
    assert recall_at_k(ranking, {"c"}, 2) == 0.0
    assert recall_at_k(ranking, {"c"}, 3) == 1.0
    assert recall_at_k(ranking, ["z", "b"], 2) == 1.0  # any of several targets
    assert recall_at_k(ranking, {"c"}, 50) == 1.0  # k > len(ranking): the whole ranking
    assert recall_at_k(ranking, {"z"}, 50) == 0.0
    assert recall_at_k([], {"a"}, 1) == 0.0


def test_recall_duplicates_count_once():
    # deduplicated: [a, b, c]; "b" is 2nd, so inside the top 2
    assert recall_at_k(["a", "a", "b", "c"], {"b"}, 2) == 1.0
    assert recall_at_k(["a", "a", "a", "b"], {"b"}, 1) == 0.0


def test_empty_ground_truth_and_bad_k():
    with pytest.raises(ValueError, match="no ground truth"):
        recall_at_k(["a"], (), 1)
    with pytest.raises(ValueError, match="no ground truth"):
        average_precision_at_k(["a"], [], 5)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(["a"], {"a"}, 0)


# ---- CIRR Recall_subset ------------------------------------------------------------------------


def test_recall_subset_at_k():
    subset = ["ref", "s1", "s2", "s3", "tgt", "ref"]
    ranking = ["x1", "ref", "s3", "x2", "s1", "tgt", "s2"]
    # restricted to members, reference removed: [s3, s1, tgt, s2] -> target 3rd
    assert [recall_subset_at_k(ranking, "tgt", subset, "ref", k) for k in (1, 2, 3)] == [0.0, 0.0, 1.0]
    # the reference is removed even when it is ranked first
    assert recall_subset_at_k(["ref", "tgt"], "tgt", subset, "ref", 1) == 1.0
    # without removing it (reference=None), it would take the first place
    assert recall_subset_at_k(["ref", "tgt"], "tgt", subset, None, 1) == 0.0


# ---- CIRCO AP@K / mAP@K ----------------------------------------------------------------------


def test_average_precision_hand_computed():
    # 4 ground truths {a, b, c, d}; ranking hits at positions 1, 3, 5:
    #   precisions at the hits: 1/1, 2/3, 3/5 -> sum = 1 + 0.6667 + 0.6 = 2.2667
    #   AP@5  = 2.2667 / min(5, 4) = 0.5667
    #   AP@2  = (1/1) / min(2, 4)  = 0.5         (only the hit at 1 is inside the top 2)
    #   AP@10 = 2.2667 / min(10, 4) = 0.5667     (k beyond the 6-long ranking)
    #   AP@1  = 1 / min(1, 4) = 1.0
    ranking = ["a", "x", "b", "y", "c", "z"]
    gt = {"a", "b", "c", "d"}
    assert average_precision_at_k(ranking, gt, 5) == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)
    assert average_precision_at_k(ranking, gt, 2) == pytest.approx(0.5)
    assert average_precision_at_k(ranking, gt, 10) == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)
    assert average_precision_at_k(ranking, gt, 1) == 1.0
    # one ground truth found at rank 4: AP@5 = (1/4) / min(5, 1) = 0.25
    assert average_precision_at_k(["p", "q", "r", "t"], ["t"], 5) == pytest.approx(0.25)
    # all ground truths first: AP = 1
    assert average_precision_at_k(["b", "a", "x"], ["a", "b"], 10) == 1.0
    # a duplicated hit is not counted twice: dedup [a, x] -> 1/1 / min(5, 2) = 0.5
    assert average_precision_at_k(["a", "a", "x"], ["a", "b"], 5) == pytest.approx(0.5)


def circo_official_ap(predictions: list[int], gt_img_ids: list[int], rank: int) -> float:
    """The formula of CIRCO's src/evaluation.py, verbatim in numpy."""
    predictions = np.array(predictions, dtype=int)
    ap_labels = np.isin(predictions, gt_img_ids)
    precisions = np.cumsum(ap_labels, axis=0) * ap_labels
    precisions = precisions / np.arange(1, ap_labels.shape[0] + 1)
    return float(np.sum(precisions[:rank]) / min(len(gt_img_ids), rank))


def test_average_precision_matches_circo_official_code():
    rng = random.Random(0)
    for _ in range(200):
        ranking = rng.sample(range(1000, 1100), 50)  # no duplicates, as CIRCO submissions
        gt = rng.sample(range(1000, 1100), rng.randint(1, 15))
        for k in (5, 10, 25, 50):
            ours = average_precision_at_k([str(i) for i in ranking], [str(i) for i in gt], k)
            assert ours == pytest.approx(circo_official_ap(ranking, gt, k))


def test_map_at_k():
    rankings = [["a", "x", "b"], ["y", "q"]]
    targets = [{"a", "b"}, {"q"}]
    # AP@3: (1 + 2/3) / 2 = 0.8333 and (1/2) / 1 = 0.5 -> mean 0.6667
    assert map_at_k(rankings, targets, 3) == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    with pytest.raises(ValueError):
        map_at_k(rankings, targets[:1], 3)


# ---- ChatIR Hits@K per round ---------------------------------------------------------------------


def test_hits_per_round_is_cumulative():
    miss = [f"m{i}" for i in range(12)]
    hit = ["m0", "m1", "T"] + miss
    late = miss[:10] + ["T"]  # 11th: outside the top 10
    # round 0 misses, round 1 hits, round 2 misses again but stays counted (first hitting time)
    assert hits_at_k_per_round([late, hit, late, miss], "T", 10) == [0.0, 1.0, 1.0, 1.0]
    assert hits_at_k_per_round([late], "T", 11) == [1.0]
    assert hits_at_k_per_round([], "T", 10) == []


# ---- summarize -------------------------------------------------------------------------------


def test_summarize_cir_with_kinds_subsets_and_skipped():
    results = [
        {  # primary target at rank 2; second ground truth at 4
            "id": "1",
            "ranking": ["x", "t1", "y", "g1"],
            "targets": ["t1", "g1"],
            "target": "t1",
            "kind": "add",
            "reference": "r1",
            "subset": ["r1", "y", "t1"],
        },
        {  # primary target missed within 50, nothing found
            "id": "2",
            "ranking": ["a", "b"],
            "targets": ["t2"],
            "target": "t2",
            "kind": "remove",
            "reference": "r2",
            "subset": ["r2", "t2", "b"],
        },
        {"id": "3", "ranking": ["a"], "targets": [], "target": None, "kind": "add", "reference": "r3"},  # test query
    ]
    s = summarize(results)
    assert s["n"] == 2 and s["skipped"] == 1
    # query 1: AP@5 = (1/2 + 2/4) / min(5, 2) = 0.5; query 2: 0 -> mAP@5 = 25.0
    assert s["mAP@5"] == 25.0 and s["mAP@50"] == 25.0
    # recall counts the primary target only: R@1 = 0, R@5 = 1/2
    assert (s["R@1"], s["R@5"], s["R@50"]) == (0.0, 50.0, 50.0)
    # subset: q1 restricted [t1, y] -> Rs@1 hit; q2 restricted [b] then t2 unranked -> miss
    assert (s["Rs@1"], s["Rs@2"], s["Rs@3"]) == (50.0, 50.0, 50.0)
    assert s["add:n"] == 1 and s["add:mAP@5"] == 50.0 and s["remove:R@5"] == 0.0


def test_summarize_t2i_rounding_and_custom_ks():
    results = [
        {"ranking": ["a", "b", "c"], "targets": ["a"]},
        {"ranking": ["a", "b", "c"], "targets": ["c"]},
        {"ranking": ["a", "b", "c"], "targets": ["z"]},
    ]
    s = summarize(results)
    assert set(s) == {"n", "skipped", "R@1", "R@5", "R@10"}
    assert s["R@1"] == 33.33 and s["R@5"] == 66.67
    assert summarize(results, ks=[2, 3])["R@3"] == 66.67


def test_summarize_chat():
    results = [
        {"rankings": [["x"], ["T"], ["x"]], "targets": ["T"], "target": "T"},
        {"rankings": [["x"], ["x"], ["x"]], "targets": ["U"], "target": "U"},
    ]
    s = summarize(results)
    assert (s["Hits@10@r0"], s["Hits@10@r1"], s["Hits@10@r2"]) == (0.0, 50.0, 50.0)


def test_summarize_nothing_to_score():
    assert summarize([{"ranking": ["a"], "targets": []}]) == {"n": 0, "skipped": 1}
    with pytest.raises(ValueError, match="task"):
        summarize([], task="vqa")


# ---- coco-mini: perfect and reversed rankings ----------------------------------------------------


def perfect(q, gallery: list[str]) -> list[str]:
    first = [q.extra["target"]] + [t for t in q.targets if t != q.extra["target"]]
    return first + [i for i in gallery if i not in first and i != q.reference]


def test_coco_mini_perfect_and_reversed(coco):
    ds = load_dataset("coco-mini-cir", coco, coco)
    gallery = list(ds.images)
    best = {q.id: perfect(q, gallery) for q in ds.queries}
    s = summarize(results_for(ds.queries, best))
    assert s["n"] == 176 and s["skipped"] == 0
    for key in ("mAP@5", "mAP@10", "mAP@25", "mAP@50", "R@1", "R@5", "R@10", "R@50"):
        assert s[key] == 100.0
    assert all(s[f"{kind}:R@1"] == 100.0 for kind in ("add", "remove", "replace"))
    worst = summarize(results_for(ds.queries, {qid: r[::-1] for qid, r in best.items()}))
    assert worst["mAP@5"] < 5.0 and worst["R@1"] == 0.0 and worst["R@10"] < s["R@10"]

    t2i = load_dataset("coco-mini-t2i", coco, coco)
    ranks = {q.id: [q.targets[0]] + [i for i in gallery if i != q.targets[0]] for q in t2i.queries}
    expected = {"n": 62, "skipped": 0, "R@1": 100.0, "R@5": 100.0, "R@10": 100.0}
    assert summarize(results_for(t2i.queries, ranks)) == expected
    reversed_t2i = summarize(results_for(t2i.queries, {k: v[::-1] for k, v in ranks.items()}))
    assert reversed_t2i["R@10"] == 0.0
