"""Out-of-fold choice of settings (pipeline/evaluation/crossval.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lensgraph.pipeline.evaluation.crossval import group_folds, out_of_fold, select


def test_no_group_is_in_two_folds_and_folds_are_balanced():
    rng = random.Random(3)
    groups = [f"ref{rng.randrange(60)}" for _ in range(400)]
    folds = group_folds(groups, 5)
    fold_of: dict[str, set[int]] = {}
    for group, fold in zip(groups, folds):
        fold_of.setdefault(group, set()).add(fold)
    assert all(len(f) == 1 for f in fold_of.values())
    sizes = [folds.count(f) for f in range(5)]
    assert max(sizes) - min(sizes) <= max(groups.count(g) for g in set(groups))
    assert group_folds(groups, 5) == folds  # deterministic
    with pytest.raises(ValueError):
        group_folds(["a", "b"], 3)


def test_the_setting_with_the_best_worst_family_wins_over_the_best_mean():
    families = ["a", "a", "b", "b"]
    baseline = np.zeros(4)
    scores = np.array([[10.0, 10.0, -1.0, -1.0],   # best mean, but family b loses
                       [2.0, 2.0, 1.0, 1.0]])      # smaller mean, no family loses
    assert select(scores, baseline, families, np.ones(4, dtype=bool)) == 1


def test_each_fold_is_scored_by_a_setting_chosen_without_it():
    # setting 0 is best on fold 0's queries only, setting 1 elsewhere: fold 0 must get setting 1
    families = ["x"] * 4
    baseline = np.zeros(4)
    scores = np.array([[9.0, 9.0, 0.0, 0.0], [1.0, 1.0, 5.0, 5.0]])
    result, chosen = out_of_fold(scores, baseline, families, [0, 0, 1, 1])
    assert chosen == {0: 1, 1: 0}
    assert result.tolist() == [1.0, 1.0, 0.0, 0.0]
