"""Device choice (auto: CUDA, then MPS, then CPU), fp16 on CUDA, batch size and decoding threads by
device. Runs on the CPU: GPUs are simulated by monkeypatching torch's availability checks."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from lensgraph.pipeline.models import onnx_clip
from lensgraph.pipeline.models.encoders import (
    ClipEncoder,
    TorchTowers,
    _onnx_or_torch,
    default_batch_size,
    resolve_device,
    torch_dtype,
)
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.ingest.indexing import default_workers
from lensgraph.pipeline.settings import load_settings


@pytest.fixture
def gpus(monkeypatch):
    """Set which accelerators torch reports: gpus(cuda=True) / gpus(mps=True) / gpus()."""

    def set_(cuda: bool = False, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(gpus, cuda, mps, expected):
    gpus(cuda=cuda, mps=mps)
    assert resolve_device("auto") == expected
    assert load_settings().resolved_device == expected


def test_explicit_device_is_kept(gpus):
    gpus(cuda=True, mps=True)
    assert [resolve_device(d) for d in ("cpu", "cuda", "mps", "cuda:1")] == ["cpu", "cuda", "mps", "cuda:1"]


def test_device_setting():
    assert load_settings().device == "auto"
    assert load_settings(device="cpu").device == "cpu"
    with pytest.raises(LensgraphError, match="device"):
        load_settings(device="gpu")


def test_batch_size_and_workers_by_device(gpus):
    gpus(cuda=True)
    assert default_batch_size("auto") == default_batch_size("cuda") == default_batch_size("cuda:0") == 128
    assert default_batch_size("cpu") == 32 and default_batch_size("mps") == 64
    gpus()
    assert default_batch_size("auto") == 32
    assert default_workers("cpu") == 2 and 2 <= default_workers("cuda") <= 8
    s = load_settings()
    assert (s.batch_size, s.workers) == (None, None)  # chosen for the device when the encoder is known
    assert (load_settings(batch_size=7, workers=0).batch_size, load_settings(workers=0).workers) == (7, 0)


def test_fp16_only_on_cuda():
    assert torch_dtype("cuda") is torch.float16 and torch_dtype("cuda:1") is torch.float16
    assert torch_dtype("cpu") is torch.float32 and torch_dtype("mps") is torch.float32


def test_fp16_inputs_are_cast_to_the_weights(clip):
    """The CUDA path (half weights, float32 pixels cast on the way in, float32 rows out), run on the CPU."""
    pixels = torch.rand(2, 3, 224, 224)
    half = ClipEncoder(clip.spec, TorchTowers(copy.deepcopy(clip.model).half(), "cpu", torch.float16),
                       clip.preprocess, clip.tokenizer, clip.dim)
    got, want = half.encode_image_tensors(pixels), clip.encode_image_tensors(pixels)
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
    assert (got * want).sum(axis=1).min() > 0.99  # fp16 rounding only
    texts = half.encode_texts(["a dog", "a red bicycle"])
    assert texts.dtype == np.float32 and (texts * clip.encode_texts(["a dog", "a red bicycle"])).sum(axis=1).min() > 0.99


def test_onnx_on_cuda_needs_the_cuda_provider(clip, monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    # auto: torch on the GPU, quietly (the intended path there); onnx asked for: a clear error
    assert _onnx_or_torch(clip.model, "ViT-B-32", clip.tokenizer, "cuda", "auto").runtime == "torch"
    with pytest.raises(LensgraphError, match="onnxruntime-gpu"):
        _onnx_or_torch(clip.model, "ViT-B-32", clip.tokenizer, "cuda", "onnx")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_clip.providers_for("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_clip.providers_for("cpu") == ["CPUExecutionProvider"]


def test_onnx_on_mps_is_torch(clip):
    assert _onnx_or_torch(clip.model, "ViT-B-32", clip.tokenizer, "mps", "auto").runtime == "torch"
    with pytest.raises(LensgraphError, match="no provider for 'mps'"):
        _onnx_or_torch(clip.model, "ViT-B-32", clip.tokenizer, "mps", "onnx")


def test_torch_runtime_keeps_the_model(clip):
    towers = _onnx_or_torch(clip.model, "ViT-B-32", clip.tokenizer, "cpu", "torch")
    assert towers.runtime == "torch" and towers.model is clip.model and towers.dtype is torch.float32


@pytest.mark.parametrize("command", [
    ["index", "."], ["search", "a cat"], ["chat", "-m", "a cat"], ["serve"], ["mcp"],
    ["eval", "--dataset", "coco-mini-cir", "--annotations", ".", "--images", ".", "--out", "run"],
])
def test_every_command_that_runs_clip_takes_device_and_runtime(command, tmp_path, monkeypatch):
    """Each flag reaches the settings (a wrong value is refused by them, naming the setting)."""
    from typer.testing import CliRunner

    from lensgraph.run import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("os.environ", dict(os.environ))  # `mcp` sets quiet-output variables for its process
    for flag, wrong in (("--device", "gpu"), ("--clip-runtime", "tensorrt")):
        result = CliRunner().invoke(app, [*command, flag, wrong, "--db", str(tmp_path / "db")])
        assert isinstance(result.exception, LensgraphError), (command, flag, result.output)
        assert flag.strip("-").replace("-", "_") in str(result.exception), str(result.exception)
