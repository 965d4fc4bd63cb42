"""`hf:REPO_OR_PATH`: a local transformers model, text-only or vision-language.

The config decides the kind: a vision-language model (`AutoModelForImageTextToText` + `AutoProcessor`)
when it has a vision tower, otherwise a causal LM (`AutoModelForCausalLM` + `AutoTokenizer`). Prompts
go through the model's own chat template. Local models have no JSON mode, so `Request.json` adds
nothing here: callers parse replies tolerantly (pipeline/models/jsonparse.py) whatever the backend.

A folder loads directly; a repo id loads through the Hugging Face cache (downloaded on first use
where the hub is reachable). One model serves one request at a time (`max_concurrency = 1`);
`generate_batch` runs several requests as one left-padded batch instead.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

from lensgraph.pipeline.errors import LensgraphError, ModelUnavailable
from lensgraph.pipeline.models.hub import WEIGHTS_HELP, hub_reachable, prefer_cache_when_offline
from lensgraph.pipeline.models.calls import IMAGE_MAX_SIDE, LOGPROB_POSITIONS, ModelError, Reply, Request, Usage

log = logging.getLogger("lensgraph")

HF_HELP = (
    "For a local transformers model use hf:/path/to/model_folder (a folder with config.json, the "
    "weights, the tokenizer or processor files), or put the repo in the Hugging Face cache under HF_HOME."
)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _looks_like_path(source: str) -> bool:
    """Repo ids are NAME or ORG/NAME; anything else (absolute, ./, ~, deeper) is meant as a folder."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def _folder_fingerprint(folder: Path) -> str:
    """Identity of a model folder's contents: every small file's bytes (configs, tokenizer, chat
    template) and the weight files' names and sizes. Hashing gigabytes of weights on every load
    would be slow, and a swapped model almost always changes its config or its weight sizes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.suffix in WEIGHT_SUFFIXES:
            digest.update(f"{path.name}:{path.stat().st_size}\n".encode())
        else:
            digest.update(f"{path.name}:".encode() + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _cached_revision(repo_id: str) -> str | None:
    """The commit of the cached snapshot that was loaded (its folder name), when known."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent.name if isinstance(found, str) else None


def is_vision_config(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or hasattr(config, "vision_config")


class HFBackend:
    kind = "hf"
    cacheable = True
    max_concurrency = 1  # one model in this process: concurrent calls would only queue on the lock

    def __init__(self, model_id: str, device: str = "cpu", dtype: str = "float32", image_max_side: int = IMAGE_MAX_SIDE):
        import torch
        import transformers

        source = model_id.removeprefix("hf:").strip()
        if not source:
            raise LensgraphError("hf: needs a repo id or a folder, e.g. hf:HuggingFaceTB/SmolVLM-256M-Instruct.")
        self.model_id = source
        self.device = device
        self.image_max_side = image_max_side  # the processor resizes anyway; a 12 Mpx photo need not reach it
        local = Path(source).expanduser()
        if local.is_dir():
            source = str(local.resolve())
        elif _looks_like_path(source):
            raise ModelUnavailable(f"hf:{self.model_id}: no such folder ({local}). {HF_HELP}")
        else:
            prefer_cache_when_offline()  # fail at once, not after a minute of retries
        try:
            config = transformers.AutoConfig.from_pretrained(source)
            self.vision = is_vision_config(config)
            model_class = transformers.AutoModelForImageTextToText if self.vision else transformers.AutoModelForCausalLM
            loader = transformers.AutoProcessor if self.vision else transformers.AutoTokenizer
            self.processor = loader.from_pretrained(source)
            self.model = model_class.from_pretrained(source, dtype=getattr(torch, dtype)).to(device).eval()
        except OSError as e:  # files missing: not in the folder, not in the cache, not downloadable
            if local.is_dir():
                raise LensgraphError(f"Could not load a transformers model from {source}: {e} {HF_HELP}") from None
            reason = str(e).splitlines()[0]
            hint = "Check the repo id (and HF_TOKEN for gated or private repos)." if hub_reachable() else WEIGHTS_HELP
            raise ModelUnavailable(f"Model hf:{self.model_id} is not available ({reason}). {hint} {HF_HELP}") from None
        except (ValueError, ImportError) as e:  # files found, but this transformers cannot build them
            raise LensgraphError(f"Could not load hf:{self.model_id}: {e}") from None
        self.tokenizer = self.processor.tokenizer if self.vision else self.processor
        self.tokenizer.padding_side = "left"  # decoder-only batches generate from a common right edge
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        where = _folder_fingerprint(local) if local.is_dir() else _cached_revision(source) or "unknown-revision"
        self.identity = f"hf|{self.model_id}|{where}|{dtype}"
        self.eos_ids = self._eos_ids()
        self._lock = threading.Lock()
        log.info("loaded hf:%s (%s, %s)", self.model_id, "vision-language" if self.vision else "text", type(self.model).__name__)

    def _eos_ids(self) -> set[int]:
        """End-of-turn ids: generation_config's (often several for chat models) and the tokenizer's."""
        configured = self.model.generation_config.eos_token_id
        ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _prompt_text(self, request: Request) -> str:
        """The chat-template string for one request (tokenised later, with its images, as a batch)."""
        if request.images and not self.vision:
            raise ModelError(f"hf:{self.model_id} is a text-only model and cannot take images; use a vision-language model.")
        if self.vision:
            # Multimodal templates iterate over content parts, so every message is a list of parts.
            user: Any = [{"type": "image"} for _ in request.images] + [{"type": "text", "text": request.prompt}]
            system: Any = [{"type": "text", "text": request.system}] if request.system else None
        else:
            user, system = request.prompt, request.system  # text templates expect plain strings
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        if not getattr(self.processor, "chat_template", None):
            raise ModelError(f"hf:{self.model_id} has no chat template; use an instruction-tuned (chat) model.")
        try:
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as e:  # jinja2.TemplateError: e.g. templates that refuse a system message
            raise ModelError(f"hf:{self.model_id}: its chat template rejected the request: {e}") from None

    def generate(self, request: Request) -> Reply:
        return self.generate_batch([request])[0]

    def generate_batch(self, requests: list[Request]) -> list[Reply]:
        """Replies in request order. Requests sharing decoding settings (and having images or not)
        run as one left-padded batch; different settings run as separate batches."""
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((bool(r.images), r.max_tokens, r.temperature), []).append(i)
        replies: list[Reply | None] = [None] * len(requests)
        for indices in groups.values():
            for i, reply in zip(indices, self._run([requests[i] for i in indices])):
                replies[i] = reply
        return replies  # type: ignore[return-value]

    def _run(self, requests: list[Request]) -> list[Reply]:
        import torch

        texts = [self._prompt_text(r) for r in requests]
        first = requests[0]
        sampling = {"do_sample": True, "temperature": first.temperature} if first.temperature > 0 else {"do_sample": False}
        with self._lock, torch.inference_mode():  # fast tokenizers and the model are not thread-safe
            if first.images:
                images = [[im.pil(self.image_max_side) for im in r.images] for r in requests]
                inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt", add_special_tokens=False)
            else:
                # The template already wrote any BOS, as apply_chat_template(tokenize=True) assumes.
                inputs = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
            inputs = inputs.to(self.device)
            scored = any(r.logprobs for r in requests)
            output = self.model.generate(
                **inputs,
                max_new_tokens=first.max_tokens,
                eos_token_id=sorted(self.eos_ids),
                pad_token_id=self.tokenizer.pad_token_id,
                output_logits=scored,  # the model's own logits: `scores` are after repetition penalties and the like
                return_dict_in_generate=True,
                **sampling,
            )
        new_tokens = output.sequences[:, inputs["input_ids"].shape[1] :].tolist()
        replies = []
        mask = inputs.get("attention_mask")
        for row, (request, ids) in enumerate(zip(requests, new_tokens)):
            alternatives = self._alternatives(output.logits, row) if request.logprobs else None
            prompt = int(mask[row].sum()) if mask is not None else int(inputs["input_ids"].shape[1])
            replies.append(self._reply(ids, first.max_tokens, alternatives, prompt))
        return replies

    def _alternatives(self, logits: tuple[Any, ...], row: int, top: int = 10) -> tuple[dict[str, float], ...]:
        """The `top` most likely tokens (as text) and their log probabilities at the first positions,
        from the model's logits (what it believes, before any generation-time processing)."""
        import math

        positions = []
        for step in logits[:LOGPROB_POSITIONS]:
            logp = step[row].float().log_softmax(-1)
            values, ids = logp.topk(top)
            alternatives: dict[str, float] = {}
            for value, token_id in zip(values.tolist(), ids.tolist()):
                if math.isinf(value):
                    continue
                text = self.tokenizer.decode([token_id])
                old = alternatives.get(text)  # tokens that decode alike share their probability
                alternatives[text] = value if old is None else max(old, value) + math.log1p(math.exp(-abs(old - value)))
            positions.append(alternatives)
        return tuple(positions)

    def _reply(self, ids: list[int], max_tokens: int, logprobs: tuple[dict[str, float], ...] | None = None,
               prompt_tokens: int = 0) -> Reply:
        end = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
        if end is not None:
            return Reply(self.tokenizer.decode(ids[:end], skip_special_tokens=True).strip(), "stop", logprobs=logprobs,
                         usage=Usage(prompt_tokens, end + 1))
        finish = "length" if len(ids) >= max_tokens else "stop"
        return Reply(self.tokenizer.decode(ids, skip_special_tokens=True).strip(), finish, logprobs=logprobs,
                     usage=Usage(prompt_tokens, len(ids)))
