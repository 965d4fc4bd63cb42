"""The ONNX runtime for CLIP: same embeddings as torch, export cached, corrupt cache re-made, and the
fallbacks (auto -> torch with a warning; onnx asked explicitly -> a clear error).

One real export (~30-50 s on 2 cores) into a temporary cache is shared by the module's tests."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from lensgraph.pipeline.models import onnx_clip
from lensgraph.pipeline.models.encoders import ClipEncoder, load_clip
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.images import decode_image, read_file

pytest.importorskip("onnxruntime")

RANDOM_CLIP = "ViT-B-32:none"
PHOTOS = Path(__file__).parent / "fixtures" / "photos"
TEXTS = [
    "a photo of a dog",
    "two red bicycles leaning on a brick wall at night",
    "",
    "A kitchen with an oven, a sink and a window; no people. " * 8,  # longer than the context: truncated
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    """A private XDG cache for the module (the user's cache is left alone)."""
    root = tmp_path_factory.mktemp("xdg-cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(root)
    yield root
    if old is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="module")
def onnx_encoder(onnx_cache) -> ClipEncoder:
    return load_clip(RANDOM_CLIP, "cpu", "onnx")


def indexer_tensors(clip: ClipEncoder):
    """The bundled photos decoded and preprocessed as pipeline/ingest/indexing.py does."""
    import torch

    paths = sorted(PHOTOS.glob("*.jpg"))
    assert len(paths) == 12
    return torch.stack([clip.preprocess(decode_image(read_file(p), str(p), 100_000_000)) for p in paths])


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)  # encoders return L2-normalised rows


def test_onnx_images_equal_torch(onnx_encoder, clip):
    assert (onnx_encoder.runtime, clip.runtime) == ("onnx", "torch")
    assert onnx_encoder.model is None  # the torch model is freed once the export is in use
    pixels = indexer_tensors(clip)
    got, want = onnx_encoder.encode_image_tensors(pixels), clip.encode_image_tensors(pixels)
    assert got.shape == want.shape == (12, clip.dim) and got.dtype == np.float32
    assert row_cosines(got, want).min() >= 0.9999
    # the batch axis is dynamic: one image, and an odd batch, give the same rows
    assert row_cosines(onnx_encoder.encode_image_tensors(pixels[:1]), want[:1]).min() >= 0.9999
    assert row_cosines(onnx_encoder.encode_image_tensors(pixels[:5]), want[:5]).min() >= 0.9999


def test_onnx_texts_equal_torch(onnx_encoder, clip):
    got, want = onnx_encoder.encode_texts(TEXTS), clip.encode_texts(TEXTS)
    assert got.shape == (len(TEXTS), clip.dim)
    assert row_cosines(got, want).min() >= 0.9999
    assert row_cosines(onnx_encoder.encode_texts(TEXTS[1:2]), want[1:2]).min() >= 0.9999
    assert onnx_encoder.encode_texts([]).shape == (0, clip.dim)


def only_export_folder(cache: Path) -> Path:
    folders = [p for p in (cache / "lensgraph" / "onnx").iterdir() if not p.name.startswith(".")]
    assert len(folders) == 1, folders
    return folders[0]


def count_exports(monkeypatch) -> list[Path]:
    """Record every export while letting it run."""
    calls: list[Path] = []
    real = onnx_clip._export

    def counting(model, tokenizer, folder):
        calls.append(folder)
        real(model, tokenizer, folder)

    monkeypatch.setattr(onnx_clip, "_export", counting)
    return calls


def test_second_load_uses_the_cache(onnx_encoder, onnx_cache, clip, monkeypatch):
    folder = only_export_folder(onnx_cache)
    assert {"image.onnx", "text.onnx", "manifest.json"} <= {p.name for p in folder.iterdir()}
    calls = count_exports(monkeypatch)
    towers = onnx_clip.load_onnx_towers(clip.model, "ViT-B-32", clip.tokenizer, "cpu", 2)
    assert calls == [] and towers.folder == folder
    # different weights are a different key: never the cached graph of another model
    assert onnx_clip.model_key(clip.model, "ViT-B-32") != onnx_clip.model_key(clip.model, "ViT-B-32-quickgelu")


def test_corrupt_cache_is_exported_again(onnx_encoder, onnx_cache, clip, monkeypatch, tmp_path, caplog):
    folder = only_export_folder(onnx_cache)
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    for p in folder.iterdir():
        os.link(p, pristine / p.name)
    weights = max(folder.glob("image.onnx*"), key=lambda p: p.stat().st_size)  # the file holding the weights
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights: loads fine, embeds wrong
    weights.unlink()  # a new inode: the pristine hard link keeps the good bytes
    weights.write_bytes(bytes(data))

    calls: list[Path] = []

    def fake_export(model, tokenizer, staging):  # a real re-export takes ~40 s: link the good one
        calls.append(staging)
        for p in pristine.iterdir():
            os.link(p, staging / p.name)

    monkeypatch.setattr(onnx_clip, "_export", fake_export)
    with caplog.at_level(logging.WARNING, logger="lensgraph"):
        towers = onnx_clip.load_onnx_towers(clip.model, "ViT-B-32", clip.tokenizer, "cpu", 2)
    assert len(calls) == 1 and "corrupt" in caplog.text
    assert onnx_clip._is_complete(folder) and towers.folder == folder
    pixels = indexer_tensors(clip)[:3]
    got = ClipEncoder(RANDOM_CLIP, towers, clip.preprocess, clip.tokenizer, clip.dim).encode_image_tensors(pixels)
    assert row_cosines(got, clip.encode_image_tensors(pixels)).min() >= 0.9999

    # a missing manifest (an export killed half-way) is re-made too
    (folder / onnx_clip.MANIFEST).unlink()
    onnx_clip.load_onnx_towers(clip.model, "ViT-B-32", clip.tokenizer, "cpu", 2)
    assert len(calls) == 2 and onnx_clip._is_complete(folder)


# -- fallbacks: no export happens in these (each fails before or inside it) ------------------------


def test_missing_onnxruntime(clip, monkeypatch, caplog):
    from lensgraph.pipeline.models.encoders import _onnx_or_torch

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with caplog.at_level(logging.INFO, logger="lensgraph"):
        towers = _onnx_or_torch(clip.model, "ViT-B-32", clip.tokenizer, "cpu", "auto")
    assert towers.runtime == "torch" and "onnxruntime is not installed" in caplog.text
    with pytest.raises(LensgraphError, match="onnxruntime is not installed"):
        _onnx_or_torch(clip.model, "ViT-B-32", clip.tokenizer, "cpu", "onnx")


def test_failed_export_falls_back_with_one_warning(clip, monkeypatch, tmp_path, caplog):
    import torch

    from lensgraph.pipeline.models.encoders import _onnx_or_torch

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::frobnicate\nlong traceback")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with caplog.at_level(logging.WARNING, logger="lensgraph"):
        towers = _onnx_or_torch(clip.model, "ViT-B-32", clip.tokenizer, "cpu", "auto")
    assert towers.runtime == "torch"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0].startswith("exporting CLIP ViT-B-32 to ONNX once")  # said before the long pause
    fallback = [w for w in warnings if "falls back to torch" in w]
    assert len(fallback) == 1 and "\n" not in fallback[0] and "aten::frobnicate" in fallback[0]
    with pytest.raises(LensgraphError, match="ONNX export failed.*frobnicate"):
        _onnx_or_torch(clip.model, "ViT-B-32", clip.tokenizer, "cpu", "onnx")
    # nothing half-written is left to be taken for an export
    assert [p for p in (tmp_path / "lensgraph" / "onnx").iterdir()] == []


def test_export_that_disagrees_with_torch_is_refused(clip, monkeypatch, tmp_path):
    """A graph that runs but computes something else (a mis-exported op) never reaches the cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    def wrong_maths(self, pixels):
        return np.random.default_rng(0).normal(size=(len(pixels), 512))

    monkeypatch.setattr(onnx_clip.OnnxTowers, "image", wrong_maths)
    monkeypatch.setattr(onnx_clip, "_export", lambda model, tokenizer, folder: (folder / "image.onnx").write_bytes(b""))
    with pytest.raises(onnx_clip.OnnxUnavailable, match="disagrees with torch"):
        onnx_clip.load_onnx_towers(clip.model, "ViT-B-32", clip.tokenizer, "cpu", 2)
    assert [p for p in (tmp_path / "lensgraph" / "onnx").iterdir()] == []


def test_runtime_setting(monkeypatch):
    from lensgraph.pipeline.settings import load_settings

    assert load_settings().clip_runtime == "auto"
    monkeypatch.setenv("LENSGRAPH_CLIP_RUNTIME", "onnx")
    assert load_settings().clip_runtime == "onnx"
    with pytest.raises(LensgraphError, match="clip_runtime"):
        load_settings(clip_runtime="tensorrt")


def test_stale_exports_are_pruned_and_used_ones_kept(tmp_path, caplog):
    """An upgrade of torch or open_clip makes a new key: the old export goes once no process has
    used it for STALE_DAYS; a recently used one, the new one and unknown folders stay."""
    day = 86400.0
    now = 1_000 * day

    def export(name: str, used_days_ago: float | None, manifest_days_ago: float = 400) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "image.onnx").write_bytes(b"x" * 1000)
        (folder / onnx_clip.MANIFEST).write_text("{}")
        os.utime(folder / onnx_clip.MANIFEST, (now - manifest_days_ago * day,) * 2)
        if used_days_ago is not None:
            (folder / onnx_clip.USED).touch()
            os.utime(folder / onnx_clip.USED, (now - used_days_ago * day,) * 2)
        return folder

    new = export("new", None, manifest_days_ago=0)
    stale = export("stale", used_days_ago=45)
    used = export("used", used_days_ago=3)  # exported long ago, loaded recently
    never_marked = export("never-marked", None)  # made before marks existed: judged by its manifest
    killed = tmp_path / ".new-abc"  # a staging folder of a killed export
    killed.mkdir()
    os.utime(killed, (now - 2 * day,) * 2)
    running = tmp_path / ".other-def"  # an export in progress in another process
    running.mkdir()
    os.utime(running, (now - 600,) * 2)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    os.utime(foreign, (now - 400 * day,) * 2)

    with caplog.at_level(logging.WARNING, logger="lensgraph"):
        onnx_clip.prune_stale_exports(tmp_path, keep=new, now=now)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".other-def", "new", "notes", "used"])
    assert "unused for 45 days" in caplog.text and str(stale) in caplog.text and str(never_marked) in caplog.text
    assert killed.exists() is False and used.exists()


def test_a_load_marks_its_export_used(onnx_encoder, onnx_cache, clip):
    folder = only_export_folder(onnx_cache)
    os.utime(folder / onnx_clip.USED, (0, 0))
    onnx_clip.load_onnx_towers(clip.model, "ViT-B-32", clip.tokenizer, "cpu", 2)
    assert (folder / onnx_clip.USED).stat().st_mtime > 1e9
