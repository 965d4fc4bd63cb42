"""The benchmarks' official protocols on their official files (../shared/data/benchmarks), with empty
stand-in image files: loaders, reference policy, `lensgraph eval`'s scoring path on planted rankings
(checked against a second, straightforward implementation here), and the submission writers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lensgraph.graphs.evaluation import DEPTH, Evaluation, subset_rankings
from lensgraph.pipeline.evaluation.datasets import load_dataset
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.evaluation.metrics import check_ids
from lensgraph.pipeline.settings import load_settings
from lensgraph.pipeline.evaluation.submission import cirr_submission, cirr_subset_submission, circo_submission


def stand_ins(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()


def write_records(out: Path, records: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "rankings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def truth(q) -> dict:
    return {"targets": list(q.targets), "target": q.extra.get("target"), "kind": q.kind, "reference": q.reference,
            "subset": list(q.subset), "aspects": list(q.extra.get("semantic_aspects") or ())}


def evaluation(dataset, out: Path, tmp_path: Path, **kw) -> Evaluation:
    return Evaluation(load_settings(db=tmp_path / "db"), dataset, out, **kw)


# ---- CIRR -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cirr(benchmarks, tmp_path_factory):
    images = tmp_path_factory.mktemp("cirr-images")
    for split in ("val", "test1"):
        paths = json.loads((benchmarks / "cirr" / "image_splits" / f"split.rc2.{split}.json").read_text())
        stand_ins(images, [p.removeprefix("./") for p in paths.values()])
    return benchmarks / "cirr", images


def test_cirr_recall_subset_counts_members_ranked_below_50(cirr, tmp_path):
    """Per query a random order of the whole gallery: eval keeps the top 50 and the members' order
    over the whole gallery; Rs@K and R@K must equal what the official logic computes from the full order."""
    annotations, images = cirr
    ds = load_dataset("cirr", annotations, images)
    assert (len(ds.queries), len(ds.images), ds.keep_reference) == (4181, 2297, False)
    gallery = sorted(ds.images)
    rng = random.Random(0)
    records, expected = [], {"R@1": 0, "R@5": 0, "R@50": 0, "Rs@1": 0, "Rs@2": 0, "Rs@3": 0}
    below_50 = 0
    for q in ds.queries:
        order = rng.sample(gallery, len(gallery))
        order.remove(q.reference)  # CIRR's protocol: the reference is removed
        position = {i: n for n, i in enumerate(order)}
        members = sorted((m for m in q.subset if m != q.reference), key=position.get)
        below_50 += any(position[m] >= DEPTH for m in members)
        # the state eval reads (a stage ranking of the top 50 and the subset in retrieval order)
        state = {"rankings": {"retrieve": order[:DEPTH]}, "subset_order": [m for m in order if m in set(q.subset)]}
        records.append({"id": q.id, "truth": truth(q), "rankings": {"retrieve": order[:DEPTH]},
                        "subset_rankings": subset_rankings(state, {}), "trace": []})
        target_at = position[q.extra["target"]]
        for k in (1, 5, 50):
            expected[f"R@{k}"] += target_at < k
        for k in (1, 2, 3):
            expected[f"Rs@{k}"] += q.extra["target"] in members[:k]
    assert below_50 > 4000  # nearly every query has a member below the cut: the case that was wrong
    out = tmp_path / "run"
    write_records(out, records)
    metrics = evaluation(ds, out, tmp_path).finish(ds.queries)["metrics"]["retrieve"]
    for key, hits in expected.items():
        assert metrics[key] == pytest.approx(100 * hits / len(ds.queries), abs=0.006), key
    assert 20 < metrics["Rs@1"] < 40  # 1 of 5 members at random


def test_cirr_submissions_have_the_servers_format(cirr, benchmarks):
    annotations, images = cirr
    ds = load_dataset("cirr", annotations, images, split="test")
    demo = json.loads((benchmarks / "cirr" / "demo_files" / "test1_pred_ranks_recall.json").read_text())
    demo_subset = json.loads((benchmarks / "cirr" / "demo_files" / "test1_pred_ranks_recall_subset.json").read_text())
    gallery = sorted(ds.images)
    rng = random.Random(1)
    rankings = {q.id: rng.sample(gallery, 60) + [q.reference] for q in ds.queries}
    orders = {q.id: rng.sample(list(q.subset), len(q.subset)) for q in ds.queries}
    main, subset = cirr_submission(rankings, ds.queries), cirr_subset_submission(orders, ds.queries)
    assert set(main) == set(demo) and set(subset) == set(demo_subset)
    assert (main["version"], main["metric"], subset["metric"]) == (demo["version"], demo["metric"], demo_subset["metric"])
    q = ds.queries[0]
    key = str(q.extra["pairid"])
    assert len(main[key]) == 50 and q.reference not in main[key]
    assert subset[key] == [m for m in orders[q.id] if m != q.reference][:3]
    # a top-50 cut that misses members cannot be submitted as if it ordered them
    with pytest.raises(LensgraphError, match="img_set members"):
        cirr_subset_submission({qq.id: [] for qq in ds.queries}, ds.queries)


# ---- FashionIQ --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashioniq(benchmarks, tmp_path_factory):
    images = tmp_path_factory.mktemp("fiq-images")
    names = set()
    for category in ("dress", "shirt", "toptee"):
        names |= set(json.loads((benchmarks / "fashioniq" / "image_splits" / f"split.{category}.val.json").read_text()))
    stand_ins(images, [f"{n}.png" for n in sorted(names)])
    return benchmarks / "fashioniq", images


def test_fashioniq_one_gallery_per_category_reference_kept_mean_of_categories(fashioniq, tmp_path):
    annotations, images = fashioniq
    ds = load_dataset("fashioniq", annotations, images)
    assert {c: len(p.images) for c, p in ds.parts.items()} == {"dress": 3817, "shirt": 6346, "toptee": 5373}
    assert ds.keep_reference and all(p.keep_reference for p in ds.parts.values())
    raw = json.loads((annotations / "captions" / "cap.dress.val.json").read_text())
    # joined as the reference code joins them, an empty first caption included
    for q, item in zip(ds.parts["dress"].queries, raw, strict=True):
        c0, c1 = item["captions"]
        assert q.text == f"{c0.strip('.?, ')} and {c1.strip('.?, ')}"
    empty_first = [q for q in ds.queries if not q.extra["captions"][0].strip(".?, ")]
    assert len(empty_first) == 3 and all(q.text.startswith(" and ") for q in empty_first)

    rng = random.Random(2)
    out = tmp_path / "run"
    run = evaluation(ds, out, tmp_path)
    run.prepare_run_dir(run.definition())
    expected: dict[str, dict[int, float]] = {}
    for category, part in ds.parts.items():
        gallery = sorted(part.images)
        records, hits = [], {10: 0, 50: 0}
        for q in part.queries:
            at = rng.randrange(100)  # where the target lands (the reference may be anywhere: it is kept)
            ranking = [i for i in rng.sample(gallery, 60) if i != q.targets[0]][:DEPTH]
            if at < DEPTH:
                ranking.insert(at, q.targets[0])
            ranking = ranking[:DEPTH]
            records.append({"id": q.id, "truth": truth(q), "rankings": {"retrieve": ranking}, "trace": []})
            for k in hits:
                hits[k] += q.targets[0] in ranking[:k]
        write_records(out / category, records)
        expected[category] = {k: 100 * v / len(part.queries) for k, v in hits.items()}
        sub = evaluation(part, out / category, tmp_path)
        sub.finish(part.queries)
    summaries = {c: json.loads((out / c / "metrics.json").read_text()) for c in ds.parts}
    metrics = run.finish_parts(summaries)["metrics"]["retrieve"]
    for category, by_k in expected.items():
        for k, value in by_k.items():
            assert metrics[f"{category}:R@{k}"] == pytest.approx(value, abs=0.006)
    for k in (10, 50):
        assert metrics[f"R@{k}"] == pytest.approx(sum(e[k] for e in expected.values()) / 3, abs=0.01)
    assert "R@1" not in metrics  # FashionIQ reports R@10 and R@50
    assert json.loads((out / "run.json").read_text())["reference"] == "kept"


# ---- CIRCO ------------------------------------------------------------------------------------


def ap_at_k(ranking: list[str], targets: set[str], k: int) -> float:
    """CIRCO src/evaluation.py, written out: precision at each hit in the top k over min(k, |gt|)."""
    hits, precisions = 0, []
    for n, i in enumerate(ranking[:k], start=1):
        if i in targets:
            hits += 1
            precisions.append(hits / n)
    return sum(precisions) / min(k, len(targets))


def test_circo_map_recall_and_semantic_aspects_on_planted_rankings(benchmarks, tmp_path):
    items = json.loads((benchmarks / "circo" / "annotations" / "val.json").read_text())
    ids = {i for item in items for i in [item["reference_img_id"], *item["gt_img_ids"]]} | set(range(1, 400))
    stand_ins(tmp_path / "unlabeled2017", [f"{i:012d}.jpg" for i in sorted(ids)])
    ds = load_dataset("circo", benchmarks / "circo", tmp_path)
    assert ds.keep_reference and len(ds.queries) == 220 and ds.recall_ks == (5, 10, 25, 50)
    gallery = sorted(ds.images)
    rng = random.Random(3)
    records = []
    per_query = []
    for q in ds.queries:
        ranking = rng.sample(gallery, len(gallery))
        for t in q.targets:  # most targets near the top, some below 50
            ranking.remove(t)
            ranking.insert(rng.randrange(80), t)
        ranking = ranking[:DEPTH]
        records.append({"id": q.id, "truth": truth(q), "rankings": {"retrieve": ranking}, "trace": []})
        per_query.append((q, ranking))
    out = tmp_path / "run"
    write_records(out, records)
    metrics = evaluation(ds, out, tmp_path).finish(ds.queries)["metrics"]["retrieve"]
    n = len(per_query)
    for k in (5, 10, 25, 50):
        assert metrics[f"mAP@{k}"] == pytest.approx(100 * sum(ap_at_k(r, set(q.targets), k) for q, r in per_query) / n, abs=0.006)
        assert metrics[f"R@{k}"] == pytest.approx(100 * sum(q.extra["target"] in r[:k] for q, r in per_query) / n, abs=0.006)
    aspects = {a for q in ds.queries for a in q.extra["semantic_aspects"]}
    assert len(aspects) == 9
    for aspect in aspects:
        chosen = [(q, r) for q, r in per_query if aspect in q.extra["semantic_aspects"]]
        value = 100 * sum(ap_at_k(r, set(q.targets), 10) for q, r in chosen) / len(chosen)
        assert metrics[f"aspect {aspect}:mAP@10"] == pytest.approx(value, abs=0.006)
        assert metrics[f"aspect {aspect}:n"] == len(chosen)


def test_circo_submission_matches_the_example(benchmarks, tmp_path):
    example = json.loads((benchmarks / "circo" / "submission_examples" / "submission_test.json").read_text())
    items = json.loads((benchmarks / "circo" / "annotations" / "test.json").read_text())
    ids = {item["reference_img_id"] for item in items} | set(range(1, 100))
    stand_ins(tmp_path / "unlabeled2017", [f"{i:012d}.jpg" for i in sorted(ids)])
    ds = load_dataset("circo", benchmarks / "circo", tmp_path, split="test")
    gallery = sorted(ds.images)
    submission = circo_submission({q.id: gallery[:51] for q in ds.queries}, ds.queries)
    assert set(submission) == set(example) and len(submission) == 800
    assert all(len(v) == 50 and all(isinstance(i, int) for i in v) for v in submission.values())


# ---- rules shared by every benchmark ----------------------------------------------------------


def test_reference_policy_follows_the_protocol_and_can_be_overridden(tmp_path):
    fix = Path(__file__).parent / "fixtures"
    circo = load_dataset("circo", fix / "circo" / "annotations" / "test.json", fix / "circo", split="test")
    cirr = load_dataset("cirr", fix / "cirr", fix / "cirr")
    assert evaluation(circo, tmp_path / "a", tmp_path).definition()["reference"] == "kept"
    assert evaluation(cirr, tmp_path / "b", tmp_path).definition()["reference"] == "removed"
    assert evaluation(circo, tmp_path / "c", tmp_path, keep_reference=False).definition()["reference"] == "removed"


def test_rankings_of_the_wrong_id_form_are_refused():
    gallery = {"397133", "790"}
    with pytest.raises(ValueError, match="must be strings"):
        check_ids([[397133, 790]], gallery)
    with pytest.raises(ValueError, match="none of the 2 ranked ids"):
        check_ids([["000000397133", "000000000790"]], gallery)
    assert check_ids([["397133", "12"]], gallery) == 1


def test_chatir_official_files_load(benchmarks, tmp_path):
    space = json.loads((benchmarks / "chatir" / "ChatIR_Protocol" / "Search_Space_val_50k.json").read_text())
    stand_ins(tmp_path, space)
    ds = load_dataset("visdial", benchmarks / "chatir", tmp_path)
    assert (ds.task, len(ds.images)) == ("chat", 50_000)
    assert len(ds.queries) == 2064 and all(len(q.dialogue) == 11 for q in ds.queries)
    assert all(q.targets[0] in ds.images for q in ds.queries)


def test_eval_visdial_runs_each_dialogue_round_by_round(coco, tmp_path, capsys):
    """`lensgraph eval --dataset visdial`: the chat graph per dialogue, cumulative Hits@10 per round,
    on ChatIR-format files over the coco-mini photos (159 images, so Hits@10 is not trivially 1)."""
    from conftest import RANDOM_CLIP, run_main
    from lensgraph.pipeline.evaluation.metrics import hits_at_k_per_round

    captions = [json.loads(line) for line in (coco / "gallery_captions.jsonl").read_text().splitlines()][:12]
    space = sorted(f"images/{p.name}" for p in (coco / "images").glob("*.jpg"))
    dialogues = [{"img": f"images/{c['id']}.jpg", "dialog": [c["caption"], "is it daytime? yes", "are there people? maybe"]}
                 for c in captions]
    (tmp_path / "dialogues").mkdir()
    (tmp_path / "dialogues" / "VisDial_v1.0_queries_val.json").write_text(json.dumps(dialogues))
    (tmp_path / "ChatIR_Protocol").mkdir()
    (tmp_path / "ChatIR_Protocol" / "Search_Space_val_50k.json").write_text(json.dumps(space))
    args = ["eval", "--dataset", "visdial", "--annotations", str(tmp_path), "--images", str(coco),
            "--out", str(tmp_path / "run"), "--db", str(tmp_path / "db"), "--clip", RANDOM_CLIP, "--json"]
    code, out, err = run_main(capsys, *args)
    assert code == 0, err
    metrics = json.loads(out)["metrics"]["retrieve"]
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "run" / "rankings.jsonl").read_text().splitlines())}
    ds = load_dataset("visdial", tmp_path, coco)
    assert len(records) == len(ds.queries) == 12 and len(ds.images) == len(space)
    per = []
    for q in ds.queries:
        r = records[q.id]
        assert len(r["rankings"]["retrieve"]) == 3 and not r.get("error")
        assert r["descriptions"][-1] == ", ".join(q.dialogue)  # no LLM: the dialogue so far, as ChatIR joins it
        per.append(hits_at_k_per_round(r["rankings"]["retrieve"], q.targets[0]))
    for n in range(3):
        assert metrics[f"Hits@10@r{n}"] == pytest.approx(100 * sum(p[n] for p in per) / len(per), abs=0.006)
    assert metrics["Hits@10@r0"] <= metrics["Hits@10@r1"] <= metrics["Hits@10@r2"]  # cumulative
    code, out, err = run_main(capsys, *args)  # a second run resumes: nothing left to do, same numbers
    assert code == 0 and json.loads(out)["metrics"]["retrieve"] == metrics
