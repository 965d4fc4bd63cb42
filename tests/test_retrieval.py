"""Retrieval on a real embedded Chroma: exact scoring equals numpy brute force; fusion; exclusion."""

from __future__ import annotations

import numpy as np
import pytest

from lensgraph.pipeline.store.index import GalleryIndex
from lensgraph.pipeline.store.retrieval import fuse, search, top_k
from lensgraph.pipeline.settings import load_settings


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, dim: int, centres: int = 50, noise: float = 0.35) -> np.ndarray:
    c = unit(rng.normal(size=(centres, dim)))
    return unit(c[rng.integers(0, centres, n)] + noise * rng.normal(size=(n, dim)) / np.sqrt(dim) * 4)


@pytest.fixture(scope="module")
def vector_index(tmp_path_factory):
    """1,500 images with 64-d image vectors and 32-d caption vectors (every third image uncaptioned)."""
    rng = np.random.default_rng(7)
    n = 1500
    settings = load_settings(db=tmp_path_factory.mktemp("vec-db"), index="vectors")
    index = GalleryIndex.create_or_open(settings, clip_spec="test:none", clip_dim=64)
    ids = [f"{i:064x}" for i in range(n)]
    images = clustered(rng, n, 64)
    index.upsert_images(ids, images, [{"path": f"/g/{i}.jpg"} for i in range(n)])
    captioned = [i for i in range(n) if i % 3]
    captions = clustered(rng, len(captioned), 32)
    index.ensure_captions("test-text", 32)
    index.upsert_captions([ids[i] for i in captioned], captions, [f"caption {i}" for i in captioned])
    cap_full = np.full((n, 32), np.nan, dtype=np.float32)
    cap_full[captioned] = captions
    return index, ids, images, cap_full, rng


def brute_force(ids, image_m, cap_m, q_img, q_cap, tau, k, exclude=()):
    img = (image_m @ q_img.T).mean(axis=1) if q_img is not None else None
    cap = (np.nan_to_num(cap_m) @ q_cap.T).mean(axis=1) if q_cap is not None else None
    if cap is not None:
        cap = np.where(np.isnan(cap_m[:, 0]), np.nan, cap)
    if img is None or tau == 1.0:  # captions only: uncaptioned images drop out
        s = cap
    elif cap is None or tau == 0.0:
        s = img
    else:
        s = (1 - tau) * img + tau * np.where(np.isnan(cap), img, cap)
    s = np.where(np.isnan(s), -np.inf, s)
    for e in exclude:
        s[ids.index(e)] = -np.inf
    order = np.argsort(-s, kind="stable")[:k]
    return [ids[i] for i in order], s[order]


@pytest.mark.parametrize("tau", [0.0, 0.15, 0.5, 1.0])
def test_exact_search_equals_brute_force(vector_index, tau):
    index, ids, images, caps, rng = vector_index
    for _ in range(5):
        q_img = unit(rng.normal(size=(3, 64)))  # three descriptions, averaged
        q_cap = unit(rng.normal(size=(3, 32)))
        exclude = {ids[int(rng.integers(len(ids)))] for _ in range(3)}
        hits = search(index, image_queries=q_img, caption_queries=q_cap, k=25, tau=tau, exclude=exclude)
        want_ids, want_scores = brute_force(ids, images, caps, q_img, q_cap, tau, 25, exclude)
        assert [h.id for h in hits] == want_ids
        np.testing.assert_allclose([h.score for h in hits], want_scores, rtol=1e-4, atol=1e-5)
        assert not exclude & {h.id for h in hits}


def test_caption_only_search_never_returns_uncaptioned_images(vector_index):
    index, ids, _, caps, rng = vector_index
    hits = search(index, caption_queries=unit(rng.normal(size=32)), k=100, tau=1.0)
    assert len(hits) == 100
    assert all(not np.isnan(caps[ids.index(h.id), 0]) for h in hits)


def test_hits_carry_paths_and_channel_scores(vector_index):
    index, ids, images, _, rng = vector_index
    q = unit(rng.normal(size=64))
    hits = search(index, image_queries=q, k=3, tau=0.0)
    assert hits[0].path == f"/g/{ids.index(hits[0].id)}.jpg"
    assert hits[0].caption_score is None
    np.testing.assert_allclose(hits[0].image_score, float(images[ids.index(hits[0].id)] @ q), rtol=1e-5)


def test_hnsw_path_rescores_exactly_with_high_recall_on_clustered_vectors(vector_index):
    index, ids, images, caps, rng = vector_index
    recalls = []
    for _ in range(20):
        q = unit(images[int(rng.integers(len(ids)))] + 0.1 * rng.normal(size=64))
        exact = search(index, image_queries=q, k=10, tau=0.0)
        approx = search(index, image_queries=q, k=10, tau=0.0, exact_limit=0)
        scores = [h.score for h in approx]
        assert scores == sorted(scores, reverse=True)
        for h in approx:  # every returned score is exact
            assert h.score == pytest.approx(float(images[ids.index(h.id)] @ q), rel=1e-4)
        recalls.append(len({h.id for h in exact} & {h.id for h in approx}) / 10)
    assert np.mean(recalls) >= 0.9, recalls


def test_fuse_and_top_k_edge_cases():
    img = np.array([0.5, 0.2, 0.9, 0.2])
    cap = np.array([0.1, np.nan, 0.1, 0.8])
    np.testing.assert_allclose(fuse(img, cap, 0.5), [0.3, 0.2, 0.5, 0.5])
    assert fuse(img, cap, 0.0) is img and fuse(img, cap, 1.0) is cap
    # ties keep gallery order; excluded rows and NaN never appear; k larger than what is left
    scores = np.array([1.0, 2.0, 2.0, np.nan, 2.0, 0.5])
    assert top_k(scores, 2).tolist() == [1, 2]
    assert top_k(scores, 10, np.array([2])).tolist() == [1, 4, 0, 5]
    assert top_k(np.array([np.nan]), 3).tolist() == []


def test_top_k_equals_a_full_sort_on_ties_nan_and_exclusions():
    """The partition-based top_k against the obvious definition: drop NaN and excluded rows, sort by
    score descending then row ascending, take k. Few distinct values make ties cross the cut often."""
    rng = np.random.default_rng(11)
    for trial in range(3000):
        n = int(rng.integers(1, 40))
        scores = rng.integers(0, int(rng.integers(1, 6)), n).astype(np.float32)
        scores[rng.random(n) < rng.choice([0.0, 0.2, 0.7])] = np.nan
        exclude = np.unique(rng.integers(0, n, int(rng.integers(0, 3))))
        k = int(rng.integers(0, n + 3))
        keep = [r for r in range(n) if not np.isnan(scores[r]) and r not in set(exclude.tolist())]
        want = sorted(keep, key=lambda r: (-scores[r], r))[:k]
        assert top_k(scores, k, exclude).tolist() == want, (trial, scores.tolist(), k, exclude.tolist())


def test_own_writes_that_keep_the_count_are_seen_at_once(tmp_path):
    """A replaced caption, or a delete followed by an add, leaves the counts as they were: the
    in-memory matrices must still follow (they once were keyed by count alone)."""
    rng = np.random.default_rng(3)
    index = GalleryIndex.create_or_open(load_settings(db=tmp_path / "db", index="writes"), clip_spec="test:none", clip_dim=8)
    index.upsert_images(["a", "b"], unit(rng.normal(size=(2, 8))), [{"path": "/a"}, {"path": "/b"}])
    index.ensure_captions("test-text", 4)
    index.upsert_captions(["a", "b"], unit(rng.normal(size=(2, 4))), ["a", "b"])
    query = unit(rng.normal(size=4))
    search(index, caption_queries=query, k=2, tau=1.0)  # fills the caches
    index.upsert_captions(["b"], query[None, :], ["now exactly the query"])
    assert search(index, caption_queries=query, k=1, tau=1.0)[0].id == "b"
    index.delete(["a"])
    index.upsert_images(["c"], unit(rng.normal(size=(1, 8))), [{"path": "/c"}])
    ids, _ = index.snapshots.matrix("images")
    assert sorted(ids) == ["b", "c"] and index.snapshots.current().row_of["c"] == ids.index("c")


def test_vectors_are_filed_by_version_and_another_process_sees_its_writes(tmp_path, monkeypatch):
    """A new process (here: a new index object) loads the vectors from the file cache, not from
    Chroma; any write by another process, even one that keeps the count, is seen."""
    import lensgraph.pipeline.store.index as index_module
    import lensgraph.pipeline.store.snapshot as snapshot_module

    rng = np.random.default_rng(5)
    settings = load_settings(db=tmp_path / "db", index="files")
    writer = GalleryIndex.create_or_open(settings, clip_spec="test:none", clip_dim=8)
    vectors = unit(rng.normal(size=(30, 8)))
    writer.upsert_images([f"id{i}" for i in range(30)], vectors, [{"path": f"/{i}"} for i in range(30)])
    monkeypatch.setattr(index_module, "FRESH_SECONDS", 0.0)  # no grace period for other processes' writes

    def fresh() -> GalleryIndex:
        return GalleryIndex.open(settings)

    first = fresh()
    ids, matrix = first.snapshots.matrix("images")  # from Chroma; files the result
    assert sorted(ids) == sorted(f"id{i}" for i in range(30))
    assert list((settings.db / "lensgraph-vectors" / "files").glob("images.*.npy"))

    second = fresh()
    monkeypatch.setattr(snapshot_module, "load_vectors", lambda *a: pytest.fail("read Chroma despite the file cache"))
    ids2, matrix2 = second.snapshots.matrix("images")
    assert ids2 == ids and np.array_equal(np.asarray(matrix2), matrix)
    monkeypatch.undo()
    monkeypatch.setattr(index_module, "FRESH_SECONDS", 0.0)

    writer.delete(["id0"])  # another process: a delete and an add, the count unchanged
    writer.upsert_images(["new"], vectors[:1], [{"path": "/new"}])
    for reader in (second, fresh()):  # a long-lived process and a new one
        ids3, matrix3 = reader.snapshots.matrix("images")
        assert "new" in ids3 and "id0" not in ids3
        assert np.allclose(matrix3[ids3.index("new")], vectors[0], atol=1e-6)
    assert len(list((settings.db / "lensgraph-vectors" / "files").glob("images.*"))) == 2  # one version kept


def test_a_broken_vector_cache_only_costs_a_reload(tmp_path):
    rng = np.random.default_rng(6)
    settings = load_settings(db=tmp_path / "db", index="broken")
    index = GalleryIndex.create_or_open(settings, clip_spec="test:none", clip_dim=8)
    index.upsert_images(["a", "b"], unit(rng.normal(size=(2, 8))), [{"path": "/a"}, {"path": "/b"}])
    ids, matrix = index.snapshots.matrix("images")
    for f in (settings.db / "lensgraph-vectors" / "broken").glob("images.*.npy"):
        f.write_bytes(b"not a numpy file")
    again = GalleryIndex.open(settings)
    ids2, matrix2 = again.snapshots.matrix("images")
    assert ids2 == ids and np.array_equal(np.asarray(matrix2), matrix)


def test_matrices_are_column_major_and_a_row_major_cache_file_is_reloaded(tmp_path):
    """Searches multiply column-major matrices (faster in OpenBLAS); a cache file filed row-major by
    an older lensgraph is not used as is (it would silently search slower) but reloaded and re-filed."""
    rng = np.random.default_rng(8)
    settings = load_settings(db=tmp_path / "db", index="layout")
    index = GalleryIndex.create_or_open(settings, clip_spec="test:none", clip_dim=8)
    vectors = unit(rng.normal(size=(20, 8)))
    index.upsert_images([f"i{n}" for n in range(20)], vectors, [{"path": f"/{n}"} for n in range(20)])
    index.ensure_captions("t", 8)
    index.upsert_captions([f"i{n}" for n in range(0, 20, 2)], vectors[::2], ["c"] * 10)
    snap = index.snapshots.current()
    assert snap.images.flags.f_contiguous and not snap.images.flags.c_contiguous
    assert snap.captions.flags.f_contiguous
    (npy,) = (settings.db / "lensgraph-vectors" / "layout").glob("images.*.npy")
    ids, matrix = GalleryIndex.open(settings).snapshots.matrix("images")
    assert isinstance(matrix, np.memmap) and matrix.flags.f_contiguous  # the file, mapped

    expected = np.array(matrix)  # a copy: the file is about to be replaced
    del matrix
    np.save(npy, np.ascontiguousarray(expected))  # as an older lensgraph filed it
    ids2, matrix2 = GalleryIndex.open(settings).snapshots.matrix("images")
    assert ids2 == ids and np.array_equal(matrix2, expected) and matrix2.flags.f_contiguous
    assert np.load(npy, mmap_mode="r").flags.f_contiguous  # re-filed column-major


def test_exact_search_reads_paths_from_its_snapshot_and_sees_a_moved_file(tmp_path, monkeypatch):
    """Per-query work stays in memory: no metadata read from Chroma; and a path changed by
    `update_metadata` (a moved file) is what the next search returns, in this and another reader."""
    rng = np.random.default_rng(3)
    settings = load_settings(db=tmp_path / "db", index="moves")
    index = GalleryIndex.create_or_open(settings, clip_spec="test:none", clip_dim=16)
    ids = [f"{i:064x}" for i in range(50)]
    vectors = unit(rng.normal(size=(50, 16)))
    index.upsert_images(ids, vectors, [{"path": f"/old/{i}.jpg", "caption": f"c{i}"} for i in range(50)])
    first = search(index, image_queries=vectors[7], k=3, tau=0.0)
    assert first[0].id == ids[7] and first[0].path == "/old/7.jpg" and first[0].caption == "c7"

    def no_reads(*args, **kwargs):
        raise AssertionError("a search read metadata from Chroma")

    with monkeypatch.context() as m:
        m.setattr(index.images, "get", no_reads)
        m.setattr(index, "metadata", no_reads)
        again = search(index, image_queries=vectors[7], k=3, tau=0.0)
    assert [(h.id, h.path, h.caption) for h in again] == [(h.id, h.path, h.caption) for h in first]

    index.update_metadata([ids[7]], [{"path": "/new/7.jpg", "caption": "c7"}])
    assert search(index, image_queries=vectors[7], k=1, tau=0.0)[0].path == "/new/7.jpg"
    other = GalleryIndex.open(settings)  # a reader that opens later: the record cache of the new version
    assert search(other, image_queries=vectors[7], k=1, tau=0.0)[0].path == "/new/7.jpg"
