"""Out-of-fold choice of settings: what a setting chosen on some queries scores on queries it never
saw. A number measured on the queries a setting was chosen on overstates what the next request gets.

- `group_folds`: folds in which no group (a reference image, a phrasing family) is in two folds;
- `select`: the setting whose worst family gains most over a baseline (ties: the best mean), so a
  setting that helps on average by hurting one kind of request is not chosen;
- `out_of_fold`: each query scored by the setting chosen without its fold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def group_folds(groups: Sequence[str], folds: int) -> list[int]:
    """The fold of each item. Every group falls in one fold; groups are dealt largest first to the fold
    with fewest items so far (ties: the lowest fold), so folds are balanced and the split is
    deterministic."""
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    sizes = Counter(groups)
    if len(sizes) < folds:
        raise ValueError(f"{len(sizes)} groups cannot fill {folds} folds")
    load = [0] * folds
    fold_of: dict[str, int] = {}
    for group, size in sorted(sizes.items(), key=lambda item: (-item[1], item[0])):
        fold = min(range(folds), key=lambda f: (load[f], f))
        fold_of[group] = fold
        load[fold] += size
    return [fold_of[g] for g in groups]


def select(scores: np.ndarray, baseline: np.ndarray, families: Sequence[str], mask: np.ndarray) -> int:
    """Index of the setting (a row of `scores`, settings x queries) whose worst family, over the
    queries in `mask`, has the largest mean gain over `baseline`; ties go to the best mean gain, then
    to the first setting."""
    gains = scores[:, mask] - baseline[mask]
    names = np.asarray(families)[mask]
    worst = np.min(np.stack([gains[:, names == f].mean(axis=1) for f in dict.fromkeys(names)]), axis=0)
    mean = gains.mean(axis=1)
    order = np.lexsort((np.arange(len(scores)), -np.round(mean, 9), -np.round(worst, 9)))
    return int(order[0])


def out_of_fold(scores: np.ndarray, baseline: np.ndarray, families: Sequence[str], folds: Sequence[int],
                ) -> tuple[np.ndarray, dict[int, int]]:
    """Each query's score under the setting `select` chose on the other folds, and that choice per fold."""
    folds = np.asarray(folds)
    result = np.empty(scores.shape[1])
    chosen: dict[int, int] = {}
    for fold in sorted(set(folds.tolist())):
        held = folds == fold
        chosen[fold] = select(scores, baseline, families, ~held)
        result[held] = scores[chosen[fold], held]
    return result, chosen
