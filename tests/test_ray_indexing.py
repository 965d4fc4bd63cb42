"""`lensgraph index --ray`: the coco-mini photos read and embedded by a Ray Data job on a local Ray
give the same index as the plain path (same ids, vectors, paths); a bad file is reported and skipped."""

from __future__ import annotations

import importlib.util
import shutil

import chromadb
import numpy as np
import pytest

from conftest import RANDOM_CLIP, cli_json
from local_servers import missing
from lensgraph.pipeline.errors import ImageLoadError
from lensgraph.pipeline.ingest.prepare import PreparedFile
from lensgraph.pipeline.ingest.ray_job import _results


def test_ray_rows_become_prepared_files_and_errors():
    batch = {
        "path": np.array(["/a.jpg", "/b.jpg", "/c.jpg"], dtype=object),
        "id": np.array(["ida", "idb", ""], dtype=object),
        "size": np.array([10, 20, 30]), "mtime_ns": np.array([1, 2, 3]),
        "width": np.array([4, 5, 0]), "height": np.array([6, 7, 0]),
        "embedded": np.array([True, False, False]),
        "error": np.array(["", "", "not an image"], dtype=object),
        "vector": np.eye(3, dtype=np.float32),
    }
    a, b, c = list(_results(batch))
    assert isinstance(a, PreparedFile) and (a.path, a.id, a.size, a.mtime_ns, a.width, a.height) == ("/a.jpg", "ida", 10, 1, 4, 6)
    assert np.array_equal(a.vector, [1, 0, 0])
    assert isinstance(b, PreparedFile) and b.vector is None  # already indexed: nothing embedded
    assert isinstance(c, ImageLoadError) and (c.path, c.reason) == ("/c.jpg", "not an image")


def vectors_by_id(db) -> dict[str, tuple[np.ndarray, str]]:
    got = chromadb.PersistentClient(str(db)).get_collection("default").get(include=["embeddings", "metadatas"])
    return {i: (np.asarray(e, dtype=np.float32), m["path"]) for i, e, m in zip(got["ids"], got["embeddings"], got["metadatas"])}


@pytest.mark.slow
def test_ray_index_equals_the_plain_index_on_coco_mini(coco, tmp_path):
    if importlib.util.find_spec("ray") is None:
        missing("Ray Data is not installed (pip install 'lensgraph[ray]')")
    folder = tmp_path / "photos"
    shutil.copytree(coco / "images", folder)
    (folder / "broken.jpg").write_bytes((coco / "images" / "000000000790.jpg").read_bytes()[:1500])

    plain = cli_json("index", str(folder), "--db", str(tmp_path / "plain"), "--clip", RANDOM_CLIP, timeout=900)
    ray = cli_json("index", str(folder), "--db", str(tmp_path / "ray"), "--clip", RANDOM_CLIP, "--ray",
                   "--batch-size", "16", timeout=900)
    assert ray["report"]["added"] == plain["report"]["added"] == 159
    assert [p for p, _ in ray["report"]["skipped"]] == [str(folder / "broken.jpg")]

    by_plain, by_ray = vectors_by_id(tmp_path / "plain"), vectors_by_id(tmp_path / "ray")
    assert set(by_ray) == set(by_plain)
    for image_id, (vector, path) in by_plain.items():
        assert by_ray[image_id][1] == path
        assert float(vector @ by_ray[image_id][0]) > 0.9999, path

    again = cli_json("index", str(folder), "--db", str(tmp_path / "ray"), "--ray", timeout=900)
    assert again["report"]["added"] == 0 and again["report"]["unchanged"] == 159  # only the broken file is read again
