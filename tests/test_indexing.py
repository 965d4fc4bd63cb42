"""Indexing real coco-mini photos into real Chroma: incremental, resumable, bad files skipped."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RANDOM_CLIP, ROOT, cli_json, run_cli, run_main
from lensgraph.pipeline.errors import EncoderMismatch
from lensgraph.adapters.searcher import Searcher
from lensgraph.pipeline.settings import load_settings
from test_images import make_bad_files


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_gallery_is_indexed_with_captions(coco_searcher, coco, gallery_ids):
    report = coco_searcher.first_report
    assert report.added == len(gallery_ids) == 159 and not report.skipped
    assert report.captions_added == 159 and not report.captions_unmatched
    info = coco_searcher.index.info()
    assert (info.images, info.captions, info.clip, info.clip_dim) == (159, 159, RANDOM_CLIP, 512)
    assert (info.text_encoder, info.text_dim) == ("st:all-MiniLM-L6-v2", 384)
    meta = coco_searcher.index.all_metadata()
    path = coco / "images" / f"{gallery_ids[0]}.jpg"
    assert meta[sha(path)]["path"] == str(path.resolve())
    assert meta[sha(path)]["width"] > 0 and meta[sha(path)]["caption"]


def test_rerun_adds_nothing(coco_searcher, coco):
    report = coco_searcher.add_folder(coco / "images", captions=coco / "gallery_captions.jsonl")
    assert (report.added, report.unchanged, report.captions_added, report.captions_unchanged) == (0, 159, 0, 159)
    assert coco_searcher.index.count() == 159
    # Not a timing assert (machines are noisy): the rerun embeds nothing, so it is cheap by construction.
    print(f"first run {coco_searcher.first_report.seconds:.1f}s, rerun {report.seconds:.2f}s")


def test_text_and_image_search_exclude_the_reference(coco_searcher, coco, gallery_ids):
    ref = coco / "images" / f"{gallery_ids[3]}.jpg"
    for kwargs in ({"ref": ref}, {"ref": ref, "text": "with a dog"}, {"text": "a dog on a couch"}):
        hits = coco_searcher.retrieve(k=10, **kwargs)
        assert len(hits) == 10 and len({h.id for h in hits}) == 10
        assert sha(ref) not in {h.id for h in hits}
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # the reference itself would be the best image match if it were not excluded
    assert coco_searcher.retrieve(ref=ref, k=1, exclude=())[0].id != sha(ref)
    assert coco_searcher.retrieve(ref=ref.read_bytes(), k=159)[-1].id != sha(ref)
    assert len(coco_searcher.retrieve(ref=ref, k=500)) == 158


def test_caption_channel_finds_the_captioned_image(coco_searcher, coco):
    """MiniLM on the caption channel: each t2i query (a 5th, held-out human caption) should find its image."""
    queries = json.loads((coco / "t2i_dev.json").read_text())
    id_of = {Path(m["path"]).stem: i for i, m in coco_searcher.index.all_metadata().items()}
    ranks = []
    for q in queries:
        hits = coco_searcher.retrieve(text=q["caption"], k=10, tau=1.0)
        ids = [h.id for h in hits]
        target = id_of[f"{q['image_id']:012d}"]
        ranks.append(ids.index(target) + 1 if target in ids else None)
    r1 = sum(r == 1 for r in ranks) / len(ranks)
    r10 = sum(r is not None for r in ranks) / len(ranks)
    print(f"caption channel on t2i_dev: R@1 {r1:.2f} R@10 {r10:.2f} ({len(ranks)} queries)")
    assert r1 >= 0.5 and r10 >= 0.85


def test_bad_files_are_reported_and_skipped(tmp_path, coco, clip, gallery_ids):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in gallery_ids[:3]:
        shutil.copy(coco / "images" / f"{name}.jpg", folder)
    expected = make_bad_files(folder)
    searcher = Searcher.open(load_settings(db=tmp_path / "db", clip=RANDOM_CLIP), create=True)
    searcher.__dict__["clip"] = clip
    report = searcher.add_folder(folder)
    assert report.added == 3
    reasons = {Path(p).name: r for p, r in report.skipped}
    assert set(reasons) == set(expected)
    for name, words in expected.items():
        assert words in reasons[name]
    # the bad files stay skipped on a rerun and the good ones stay unchanged
    again = searcher.add_folder(folder)
    assert (again.added, again.unchanged, len(again.skipped)) == (0, 3, len(expected))


def test_moved_deleted_and_duplicate_files(tmp_path, coco, clip, gallery_ids):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in gallery_ids[:4]:
        shutil.copy(coco / "images" / f"{name}.jpg", folder)
    searcher = Searcher.open(load_settings(db=tmp_path / "db", clip=RANDOM_CLIP), create=True)
    searcher.__dict__["clip"] = clip
    assert searcher.add_folder(folder).added == 4
    moved_id = sha(folder / f"{gallery_ids[0]}.jpg")
    (folder / "sub").mkdir()
    (folder / f"{gallery_ids[0]}.jpg").rename(folder / "sub" / "moved.jpg")
    shutil.copy(folder / f"{gallery_ids[1]}.jpg", folder / "copy.jpg")
    (folder / f"{gallery_ids[2]}.jpg").unlink()
    report = searcher.add_folder(folder)
    assert (report.added, report.moved, report.duplicates, report.missing) == (0, 1, 1, 1)
    assert searcher.index.metadata([moved_id])[moved_id]["path"] == str((folder / "sub" / "moved.jpg").resolve())
    assert searcher.add_folder(folder, prune=True).pruned == 1
    assert searcher.index.count() == 3


def test_encoder_mismatch_is_refused(coco_searcher):
    settings = coco_searcher.settings.model_copy(update={"clip": "ViT-B-16:none"})
    with pytest.raises(EncoderMismatch, match="built with CLIP"):
        Searcher.open(settings)
    settings = coco_searcher.settings.model_copy(update={"clip": None, "text_encoder": "clip"})
    with pytest.raises(EncoderMismatch, match="captions embedded with"):
        Searcher.open(settings)


def test_checkpoint_file_spec_loads_the_saved_weights(tmp_path, clip):
    import numpy as np
    import torch

    from lensgraph.pipeline.models.encoders import load_clip

    ckpt = tmp_path / "clip.pt"
    torch.save(clip.model.state_dict(), ckpt)
    loaded = load_clip(f"ViT-B-32:{ckpt}")
    assert not loaded.random_weights
    np.testing.assert_allclose(loaded.encode_texts(["a cat"]), clip.encode_texts(["a cat"]), atol=1e-5)


def test_missing_weights_fail_fast_with_instructions():
    from lensgraph.pipeline.models.encoders import load_clip
    from lensgraph.pipeline.errors import ModelUnavailable

    started = time.perf_counter()
    with pytest.raises(ModelUnavailable) as info:
        load_clip("ViT-B-32:laion2b_s34b_b79k")
    assert "--clip ViT-B-32:/path/to" in str(info.value) and "HF_HOME" in str(info.value)
    assert time.perf_counter() - started < 60  # no minute of hub retries (generous: shared machine)


@pytest.mark.slow
def test_kill_9_mid_index_then_resume_gives_exactly_the_same_ids(tmp_path, coco):
    folder = tmp_path / "all"
    folder.mkdir()
    files = sorted((coco / "images").glob("*.jpg")) + sorted((coco / "extra").glob("*.jpg"))
    for f in files:
        (folder / f.name).symlink_to(f)
    expected = {sha(f) for f in files}
    db = tmp_path / "db"
    args = [sys.executable, str(ROOT / "run.py"), "index", str(folder), "--db", str(db), "--clip", RANDOM_CLIP,
            "--batch-size", "8", "--verbose"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
                            env={**os.environ, "COLUMNS": "200"})
    batches = 0
    for line in proc.stderr:
        batches += "indexed batch" in line
        if batches >= 3:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert batches >= 3, "indexing finished or failed before it could be killed"

    resumed = cli_json("index", str(folder), "--db", str(db))
    report = resumed["report"]
    assert 0 < report["added"] < len(expected), report  # some were kept from the killed run
    assert report["added"] + report["unchanged"] == len(expected)
    import chromadb

    ids = chromadb.PersistentClient(str(db)).get_collection("default").get(include=[])["ids"]
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == expected


def test_cli_index_search_info(tmp_path, coco, gallery_ids):
    folder = tmp_path / "few"
    folder.mkdir()
    for name in gallery_ids[:12]:
        (folder / f"{name}.jpg").symlink_to(coco / "images" / f"{name}.jpg")
    db = str(tmp_path / "db")
    first = cli_json("index", str(folder), "--db", db, "--index", "few", "--clip", RANDOM_CLIP)
    assert first["report"]["added"] == 12 and first["index"]["images"] == 12
    ref = folder / f"{gallery_ids[0]}.jpg"
    found = cli_json("search", "--db", db, "--index", "few", "--ref", str(ref), "--k", "5")
    assert len(found["results"]) == 5 and sha(ref) not in {r["id"] for r in found["results"]}
    found = cli_json("search", "--db", db, "--index", "few", "--text", "a kitchen", "--k", "20")
    assert len(found["results"]) == 12
    info = cli_json("info", "--db", db, "--index", "few")
    assert (info["images"], info["clip"], info["captions"]) == (12, RANDOM_CLIP, 0)
    table = run_cli("search", "--db", db, "--index", "few", "--text", "a kitchen", "--k", "3")
    assert table.returncode == 0 and str(folder) in table.stdout and "RANDOM weights" in table.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["index", "/nonexistent/folder"], "is not a folder"),
        (["search", "--text", "x", "--index", "nope"], "No index named 'nope'"),
        (["search", "--text", "x", "--index", "empty"], "is empty"),
        (["search", "--text", "x", "--index", "empty", "--clip", "ViT-B-16:none"], "built with CLIP"),
        (["search", "--index", "empty"], "Give a query"),
        (["search", "--text", "x", "--index", "empty", "--ref", "/no/such.jpg"], "does not exist"),
        (["index", ".", "--index", "new", "--clip", "ViT-B-32"], "not MODEL:PRETRAINED"),
        (["index", ".", "--index", "new", "--clip", "ViT-B-32:no-such-tag"], "neither an existing checkpoint"),
        (["info", "--index", "a b"], "index names"),
        (["info", "--chroma-url", "http://127.0.0.1:9"], "Cannot reach the Chroma server"),
    ],
)
def test_cli_user_mistakes_are_one_clear_message(tmp_path, capsys, args, message):
    from lensgraph.pipeline.store.index import GalleryIndex

    db = tmp_path / "db"
    GalleryIndex.create_or_open(load_settings(db=db, index="empty"), RANDOM_CLIP, 512)
    code, stdout, stderr = run_main(capsys, *args, "--db", str(db))
    assert code == 2, (stdout, stderr)
    assert message in " ".join(stderr.split()), stderr
    assert "Traceback" not in stderr and stderr.count("Error:") == 1


def test_cli_user_mistake_in_a_real_process_has_no_traceback(tmp_path):
    result = run_cli("search", "--text", "x", "--index", "nope", "--db", str(tmp_path / "db"))
    assert result.returncode == 2 and "No index named 'nope'" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_index_time_captioning_with_a_local_vlm(tmp_path, coco, gallery_ids):
    """`index --caption-with hf:FOLDER` captions every new image with a (tiny, random) Idefics3,
    into the caption channel; a rerun makes no new model calls (the call cache)."""
    from tiny_hf_models import build_idefics3

    vlm = build_idefics3(tmp_path / "tiny-idefics3")
    folder = tmp_path / "few"
    folder.mkdir()
    for name in gallery_ids[:3]:
        (folder / f"{name}.jpg").symlink_to(coco / "images" / f"{name}.jpg")
    args = ["index", str(folder), "--db", str(tmp_path / "db"), "--clip", RANDOM_CLIP,
            "--text-encoder", "st:all-MiniLM-L6-v2", "--caption-with", f"hf:{vlm}"]
    first = cli_json(*args)
    assert first["report"]["captions_added"] == 3 and not first["report"]["skipped"]
    assert first["index"]["captions"] == 3 and first["index"]["text_encoder"] == "st:all-MiniLM-L6-v2"
    meta = Searcher.open(load_settings(db=tmp_path / "db")).index.all_metadata()
    assert all(isinstance(m.get("caption"), str) and m["caption"] for m in meta.values())
    again = cli_json(*args)
    assert again["report"]["captions_added"] == 0 and again["report"]["captions_unchanged"] == 3
