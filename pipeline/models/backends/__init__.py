"""Model backends and the factory that builds them from spec strings.

- `openai:MODEL`: OpenAI or any OpenAI-compatible server (base URL from settings)
- `hf:REPO_OR_PATH`: local transformers
- `caption`: caption mode's vision model (stored captions + the text LLM)
Each backend implements `generate(Request) -> Reply` (pipeline/models/calls.py); `Model` adds the
cache, retries, concurrency limit and counters around every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.models.calls import CallCache, Model
from lensgraph.pipeline.models.prompts import PromptSet
from lensgraph.pipeline.settings import Settings

from lensgraph.pipeline.models.backends.caption_mode import CaptionLookup, CaptionVisionBackend


@dataclass
class Models:
    """The models of one pipeline, by role."""

    llm: Model | None  # reason, propose
    captioner: Model | None  # caption the reference
    verifier: Model | None  # answer the verification questions
    judge: Model | None  # judge reference | candidate

    def all(self) -> list[Model]:
        seen: dict[int, Model] = {}
        for m in (self.llm, self.captioner, self.verifier, self.judge):
            if m is not None:
                seen.setdefault(id(m), m)
        return list(seen.values())


def build_backend(spec: str, settings: Settings, base_url: str | None):
    scheme, _, name = spec.partition(":")
    if scheme == "openai":
        from lensgraph.pipeline.models.backends.openai_compat import OpenAIBackend

        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIBackend(
            name,
            base_url=base_url or settings.openai_base_url,
            api_key=key,
            timeout=settings.timeout,
            max_concurrency=settings.max_concurrency,
            image_max_side=settings.image_max_side,
        )
    if scheme == "hf":
        from lensgraph.pipeline.models.backends.hf_local import HFBackend

        return HFBackend(name, device=settings.resolved_device, image_max_side=settings.image_max_side)
    raise LensgraphError(f"Unknown model spec {spec!r}: use openai:MODEL, hf:REPO_OR_PATH, or caption (vision roles).")


def build_models(settings: Settings, prompts: PromptSet, captions: CaptionLookup, cache: CallCache | None = None) -> Models:
    """Build the models the requested stages need; one Model per distinct spec."""
    built: dict[tuple[str, str | None], Model] = {}

    def get(spec: str | None, base_url: str | None) -> Model | None:
        if not spec:
            return None
        if spec == "caption":
            if settings.llm is None:
                raise LensgraphError("Caption mode (--vlm caption) needs a text LLM (--llm).")
            llm = get(settings.llm, settings.llm_base_url)
            key = ("caption", None)
            if key not in built:
                built[key] = Model("caption", CaptionVisionBackend(llm, captions, prompts["caption_vision"]), None)
            return built[key]
        key = (spec, base_url)
        if key not in built:
            built[key] = Model(spec, build_backend(spec, settings, base_url), cache, retries=settings.retries)
        return built[key]

    stages = settings.resolved_stages
    needs_llm = stages != "retrieve"
    llm = get(settings.llm, settings.llm_base_url)
    if needs_llm and llm is None:
        raise LensgraphError(
            f"--stages {stages} needs a text LLM: --llm openai:MODEL (with --llm-base-url for a local "
            "server) or --llm hf:REPO_OR_PATH; or --stages retrieve for CLIP retrieval alone."
        )
    vlm_spec = settings.vlm
    model_verifies = settings.resolved_verifier == "model" and stages in ("verify", "judge")
    verifier = get(vlm_spec, settings.vlm_base_url) if model_verifies else None
    judge = get(settings.judge or vlm_spec, settings.vlm_base_url) if stages == "judge" else None
    # caption mode's "VLM" cannot caption: the reference's caption comes from the index
    captioner = get(settings.captioner or (vlm_spec if vlm_spec != "caption" else None), settings.vlm_base_url)
    for role, model in (("verify", verifier), ("judge", judge)):
        needed = model_verifies if role == "verify" else stages == "judge"
        if model is None and needed:
            raise LensgraphError(
                f"--stages {stages} needs a vision model for {role}: --vlm openai:MODEL, --vlm hf:REPO_OR_PATH, "
                "or --vlm caption (caption mode: the LLM reads stored captions)."
            )
    return Models(llm=llm, captioner=captioner, verifier=verifier, judge=judge)
