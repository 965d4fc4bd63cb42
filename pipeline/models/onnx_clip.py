"""CLIP's two towers exported to ONNX once per model and run with ONNX Runtime.

On the CPU, ONNX Runtime runs the same fp32 maths a little faster than torch's eager mode on an
idle machine, and is slowed much less when other processes share the cores (bench/index_speed.py).
The export is made from the loaded torch model with torch's own exporter
(`torch.onnx.export(dynamo=True)`, the default since torch 2.9; the TorchScript exporter is
deprecated) and cached on disk under a content key:

    $XDG_CACHE_HOME/lensgraph/onnx/<key>/{image.onnx, text.onnx, *.data, manifest.json}
    (~/.cache/lensgraph/onnx/... when XDG_CACHE_HOME is not set)

The key hashes everything the graph depends on: the loaded weights' bytes (so one rule serves every
source: an open_clip tag, a checkpoint file, hf-hub:, local-dir:, seeded random weights), the module tree
(`repr`: layer types such as QuickGELU, shapes), the model name, the dtype and the open_clip/torch
versions. The manifest, written last, holds the size, mtime and sha256 of every file: a partial
export, or a file changed since, fails the check at load and is exported again. A fresh export is
checked against torch on a small batch before it is used.

Every key changes with an upgrade of torch or open_clip, leaving the old export (~600 MB for
ViT-B-32) behind: each load marks its export as used, and a new export removes the ones no process
has used for `STALE_DAYS` (a long-lived second environment still using one keeps it), and staging
folders left by an export that was killed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.images import file_sha256

log = logging.getLogger("lensgraph")

EXPORT_RECIPE = 1  # bump when the export below changes: old cache entries are then ignored
TOWERS = ("image", "text")
MANIFEST = "manifest.json"
# A fresh export must agree with torch at least this well on a test batch (fp16 rounds differently
# in each runtime's kernels, so it gets a looser bound).
MIN_COSINE = {"float32": 0.9999, "float16": 0.999}
USED = "last-used"  # its mtime: when a process last loaded the export
STALE_DAYS = 30


class OnnxUnavailable(LensgraphError):
    """ONNX Runtime cannot run this CLIP here (not installed, no provider for the device, export failed)."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lensgraph" / "onnx"


def providers_for(device: str) -> list[str]:
    """ONNX Runtime providers for a torch device; raises OnnxUnavailable when there are none."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise OnnxUnavailable("onnxruntime is not installed (pip install onnxruntime)") from None
    kind = device.split(":", 1)[0]
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise OnnxUnavailable(
        f"this onnxruntime has no provider for {device!r} (has {', '.join(ort.get_available_providers())}; "
        "CUDA needs the onnxruntime-gpu package)"
    )


def model_key(model: Any, model_name: str) -> str:
    """Content hash of everything the exported graphs depend on."""
    import open_clip
    import torch

    h = hashlib.sha256()
    dtype = next(model.parameters()).dtype
    head = [EXPORT_RECIPE, model_name, str(dtype), open_clip.__version__, torch.__version__, repr(model)]
    h.update(json.dumps(head).encode())
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(data.shape)}:{data.dtype};".encode())
        h.update(data.view(-1).view(torch.uint8).numpy())  # raw bytes, no copy (bf16 has no numpy dtype)
    return h.hexdigest()[:32]


def _file_entry(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"sha256": file_sha256(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _is_complete(folder: Path) -> bool:
    """True when the manifest exists and every file it lists is there, unchanged since the export.
    Unchanged = same size and mtime, as the indexer judges photos: a check that costs a stat, where
    re-hashing ~600 MB would add ~0.4 s to every start (the sha256 stays in the manifest)."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
        if not all(f"{t}.onnx" in files for t in TOWERS):
            return False
        for name, entry in files.items():
            st = (folder / name).stat()
            if (st.st_size, st.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _tower_module(model: Any, tower: str) -> Any:
    """One tower of an open_clip model as a module with one input (what the exporter traces)."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.clip.encode_image(x) if tower == "image" else self.clip.encode_text(x)

    return Tower().eval()


def _example_input(model: Any, tower: str, tokenizer: Any) -> Any:
    """Two rows (a batch of one lets the exporter fix the batch size)."""
    import torch

    param = next(model.parameters())
    if tower == "text":
        return tokenizer(["a photo of a dog", "two red bicycles leaning on a wall at night"]).to(param.device)
    size = model.visual.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    generator = torch.Generator().manual_seed(0)
    return torch.rand((2, 3, *size), generator=generator).to(param.device, param.dtype)


def _export(model: Any, tokenizer: Any, folder: Path) -> None:
    """Export both towers into `folder` (a fresh directory), then write the manifest."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=65536)
    for tower in TOWERS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes are for torch developers, not our users
            torch.onnx.export(
                _tower_module(model, tower),
                (_example_input(model, tower, tokenizer),),
                str(folder / f"{tower}.onnx"),
                input_names=["input"],
                output_names=["features"],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                external_data=True,  # towers over 2 GB (ViT-bigG) cannot be one protobuf
                verbose=False,
            )
    files = {p.name: _file_entry(p) for p in sorted(folder.iterdir()) if p.is_file()}
    (folder / MANIFEST).write_text(json.dumps({"recipe": EXPORT_RECIPE, "files": files}, indent=1))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


@dataclass
class OnnxTowers:
    """Runs an exported CLIP with ONNX Runtime; each tower's session opens on first use (indexing
    never loads the text tower, a text search never loads the image tower)."""

    folder: Path
    providers: list[str]
    threads: int
    runtime: str = "onnx"
    _sessions: dict[str, Any] = field(default_factory=dict, repr=False)
    _open_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def session(self, tower: str) -> Any:
        with self._open_lock:
            if tower not in self._sessions:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1  # the graph is one chain of ops: nothing to run side by side
                # Idle pool threads sleep instead of spinning: the indexer decodes photos in threads
                # beside the model, and the machine may be shared (indexing under load here: 7.9 vs
                # 6.5-7.3 images/s with spinning; a small, noisy A/B).
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                self._sessions[tower] = ort.InferenceSession(
                    str(self.folder / f"{tower}.onnx"), options, providers=self.providers
                )
            return self._sessions[tower]

    def _run(self, tower: str, x: Any) -> np.ndarray:
        session = self.session(tower)
        spec = session.get_inputs()[0]
        array = x.detach().cpu().numpy()
        if spec.type == "tensor(float16)":
            array = array.astype(np.float16)
        elif spec.type == "tensor(float)":
            array = array.astype(np.float32, copy=False)
        return np.asarray(session.run(None, {spec.name: array})[0], dtype=np.float32)

    def image(self, pixels: Any) -> np.ndarray:
        return self._run("image", pixels)

    def text(self, tokens: Any) -> np.ndarray:
        return self._run("text", tokens)


def _check_against_torch(towers: OnnxTowers, model: Any, tokenizer: Any) -> None:
    import torch

    bound = MIN_COSINE.get(str(next(model.parameters()).dtype).removeprefix("torch."), MIN_COSINE["float16"])
    for tower in TOWERS:
        x = _example_input(model, tower, tokenizer)
        with torch.inference_mode():
            expected = (model.encode_image(x) if tower == "image" else model.encode_text(x)).float().cpu().numpy()
        got = towers.image(x) if tower == "image" else towers.text(x)
        worst = float(_cosines(got, expected).min())
        if not worst >= bound:
            raise OnnxUnavailable(f"the exported {tower} tower disagrees with torch (cosine {worst:.6f})")


def load_onnx_towers(model: Any, model_name: str, tokenizer: Any, device: str, threads: int) -> OnnxTowers:
    """The cached export of `model` (made now if absent or corrupt), ready to run on `device`.
    Raises OnnxUnavailable when ONNX Runtime is missing, has no provider for the device, or the
    export fails."""
    providers = providers_for(device)
    root = cache_root()
    folder = root / model_key(model, model_name)
    if _is_complete(folder):
        log.info("CLIP ONNX export found in %s", folder)
        _mark_used(folder)
        return OnnxTowers(folder, providers, threads)
    if folder.exists():
        log.warning("CLIP ONNX export in %s is incomplete or corrupt: exporting again", folder)
    log.warning("exporting CLIP %s to ONNX once (about a minute; cached in %s)", model_name, folder)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    try:
        try:
            _export(model, tokenizer, staging)
        except Exception as e:  # the exporter raises many kinds; any of them means "no ONNX for this model"
            raise OnnxUnavailable(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
        _check_against_torch(OnnxTowers(staging, providers, threads), model, tokenizer)
        shutil.rmtree(folder, ignore_errors=True)
        try:
            staging.rename(folder)
        except OSError:  # another process finished the same export first
            if not _is_complete(folder):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _mark_used(folder)
    prune_stale_exports(root, keep=folder)
    return OnnxTowers(folder, providers, threads)


def _mark_used(folder: Path) -> None:
    try:
        (folder / USED).touch()
    except OSError:  # a read-only cache still works; it is only never pruned
        pass


def prune_stale_exports(root: Path, keep: Path, now: float | None = None) -> None:
    """Remove exports unused for STALE_DAYS (by their mark, else their manifest) and staging folders
    older than a day (an export takes minutes: an older one was killed). Best effort."""
    now = time.time() if now is None else now
    for folder in root.iterdir() if root.is_dir() else ():
        if folder == keep or not folder.is_dir():
            continue
        staging = folder.name.startswith(".")
        marks = [folder / USED, folder / MANIFEST] + ([folder] if staging else [])
        try:
            used = max(p.stat().st_mtime for p in marks if p.exists())
            if now - used <= (86400 if staging else STALE_DAYS * 86400):
                continue
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        except (OSError, ValueError):  # removed meanwhile, or neither mark: not ours to judge
            continue
        shutil.rmtree(folder, ignore_errors=True)
        log.warning("removed the CLIP ONNX export %s, unused for %d days (%.0f MB)", folder,
                    (now - used) // 86400, size / 2**20)
