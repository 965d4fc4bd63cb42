"""Test-server files: shapes and keys as in CIRR's demo_files and CIRCO's submission_examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lensgraph.pipeline.evaluation.datasets import load_dataset
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.evaluation.submission import circo_submission, cirr_submission, cirr_subset_submission, write_json

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def cirr_test():
    return load_dataset("cirr", FIX / "cirr", FIX / "cirr", "test")


def test_cirr_files(cirr_test, tmp_path):
    gallery = list(cirr_test.images)
    # every query ranks the whole gallery, its reference first (the writer must drop it), with a duplicate
    rankings = {q.id: [q.reference, *gallery, gallery[0]] for q in cirr_test.queries}
    main = cirr_submission(rankings, cirr_test.queries)
    assert list(main)[:2] == ["version", "metric"]
    assert main["version"] == "rc2" and main["metric"] == "recall"
    assert set(main) == {"version", "metric", "12063", "12064"}
    for q in cirr_test.queries:
        names = main[q.id]
        assert q.reference not in names and len(names) == len(set(names)) == 5  # 6 images minus the reference
    subset = cirr_subset_submission(rankings, cirr_test.queries)
    assert subset["metric"] == "recall_subset" and subset["version"] == "rc2"
    q = cirr_test.queries[0]
    expected = [i for i in gallery if i in q.subset and i != q.reference][:3]
    assert subset["12063"] == expected and len(expected) == 3
    path = write_json(tmp_path / "out" / "cirr_recall.json", main)
    assert json.loads(path.read_text()) == main


def test_cirr_subset_refuses_a_ranking_that_does_not_order_the_members(cirr_test):
    """Members missing from a cut ranking are not filled in img_set order (that would submit an
    order the model never gave): the run's subset_rankings must be used."""
    q = cirr_test.queries[0]  # members: 147-1 (ref), 1001-2, 83-1, 359-0, 906-0, 83-0
    rankings = {q.id: ["test1-906-0-img1"] for q in cirr_test.queries}
    with pytest.raises(LensgraphError, match="orders 1 of its 5 img_set members"):
        cirr_subset_submission(rankings, cirr_test.queries)
    assert cirr_submission(rankings, cirr_test.queries, top=50)[q.id] == ["test1-906-0-img1"]


def test_incomplete_submission_is_refused(cirr_test):
    with pytest.raises(LensgraphError, match="No ranking for 1 of 2 queries"):
        cirr_submission({"12063": ["a"]}, cirr_test.queries)


def test_circo_file(tmp_path):
    ds = load_dataset("circo", FIX / "circo", FIX / "circo", "test")
    gallery = sorted(ds.images, key=int) * 20  # 120 entries with repeats -> 6 distinct
    rankings = {q.id: gallery for q in ds.queries}
    data = circo_submission(rankings, ds.queries)
    assert set(data) == {"0", "1"}
    for q in ds.queries:
        ids = data[q.id]
        assert all(isinstance(i, int) for i in ids) and int(q.reference) not in ids
        assert len(ids) == 5 and ids == sorted(ids)
    long = {q.id: [str(i) for i in range(1, 200)] for q in ds.queries}
    assert all(len(v) == 50 for v in circo_submission(long, ds.queries).values())
    with pytest.raises(LensgraphError, match="COCO ids"):
        circo_submission({q.id: ["dev-1-img0"] for q in ds.queries}, ds.queries)
    written = json.loads(write_json(tmp_path / "circo.json", data).read_text())
    assert written == data and isinstance(written["0"][0], int)
    assert not list(tmp_path.glob("*.tmp"))
