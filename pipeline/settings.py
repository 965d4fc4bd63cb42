"""All run settings in one place.

Precedence: CLI flags (passed as keyword arguments) > LENSGRAPH_* environment variables >
`lensgraph.toml` (in the working directory, or the file named by LENSGRAPH_CONFIG) > defaults.
Libraries keep their own standard variables: HF_HOME and HF_HUB_OFFLINE are read by
huggingface_hub (where open_clip and sentence-transformers look for weights).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from lensgraph.pipeline.models.encoders import ClipRuntime, Device, resolve_device
from lensgraph.pipeline.errors import LensgraphError

STAGES = ("retrieve", "reason", "verify", "judge")
"""The stages a run may stop after (`--stages`), in order; each includes the ones before."""
RANKING_STAGES = ("retrieve", "verify", "judge")
"""The stages that rank the candidates, in order: retrieval, then each re-ranking."""


OPERATIONAL = frozenset({
    "db", "chroma_url", "cache", "no_cache", "timeout", "retries", "max_concurrency", "workers", "batch_size",
    "openai_api_key", "openai_base_url", "llm_base_url", "vlm_base_url", "device", "clip_runtime",
})
"""Settings that change how a run goes (where, how fast, through which server, with which key),
not what it finds: left out of a run's definition (`Settings.definition`)."""


def check_stages(value: str | None) -> str | None:
    """The one check of a stages value, at every door (CLI, Python API, tools, MCP, REST)."""
    if value is not None and value not in STAGES:
        raise LensgraphError(f"stages is one of {', '.join(STAGES)} (each includes the ones before), not {value!r}.")
    return value


def check_threshold(value: float | None) -> float | None:
    """The one check of a relevance threshold, at every door: a probability, or None for no threshold."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0):
        raise LensgraphError(f"threshold is a number between 0 and 1, not {value!r}.")
    return value


DEFAULT_CLIP = "ViT-B-32:laion2b_s34b_b79k"  # ImageScope's default CLIP
CONFIG_ENV = "LENSGRAPH_CONFIG"


def default_db_path() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "lensgraph" / "db"


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV, "lensgraph.toml"))


class Settings(BaseSettings):
    """Settings shared by every command. Field names are the CLI flags and toml keys."""

    model_config = SettingsConfigDict(
        env_prefix="LENSGRAPH_", extra="forbid", validate_default=True, populate_by_name=True
    )

    db: Path = Field(default_factory=default_db_path, description="Folder of the embedded Chroma database.")
    chroma_url: str | None = Field(None, description="A Chroma server (http://host:port); replaces --db.")
    index: str = Field("default", description="Name of the gallery index inside the database.")
    clip: str | None = Field(
        None,
        description=f"CLIP spec MODEL:PRETRAINED. Default: the index's own, or {DEFAULT_CLIP} for a new index.",
    )
    text_encoder: str | None = Field(
        None, description="Caption-channel text encoder: 'clip' (CLIP's text tower) or 'st:NAME_OR_PATH'."
    )
    device: Device = Field(
        "auto", description="Device for the local models: 'auto' is CUDA, else Apple's MPS, else the CPU (fp16 on CUDA)."
    )
    clip_runtime: ClipRuntime = Field(
        "auto",
        description="How CLIP runs: 'onnx' (exported once, run by ONNX Runtime: ~1.1x torch on an idle CPU, more "
        "when the cores are shared), 'torch', or 'auto' (onnx where ONNX Runtime can run on the device, else torch).",
    )
    batch_size: int | None = Field(
        None, ge=1, le=4096, description="Images per encoder batch [default: by device, 32 on the CPU, 128 on CUDA]."
    )
    workers: int | None = Field(
        None, ge=0, le=64,
        description="Threads decoding images while the model runs [default: by device, 2 on the CPU, up to 8 on a GPU].",
    )
    max_pixels: int = Field(100_000_000, ge=1, description="Larger images are refused as decompression bombs.")
    tau: float = Field(0.15, ge=0.0, le=1.0, description="Weight of the caption channel in the fused score.")
    exact_limit: int = Field(
        200_000, ge=0, description="Galleries up to this size are scored exactly in memory; above, HNSW + re-scoring."
    )


    # -- models (the reasoning stages) --
    llm: str | None = Field(None, description="Text LLM spec: openai:MODEL or hf:REPO_OR_PATH.")
    vlm: str | None = Field(None, description="Vision model spec: openai:MODEL, hf:REPO_OR_PATH, or 'caption' (caption mode).")
    captioner: str | None = Field(None, description="Captioner spec [default: the VLM].")
    judge: str | None = Field(None, description="Judge spec [default: the VLM].")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible server for the LLM [default: OPENAI_BASE_URL].")
    vlm_base_url: str | None = Field(None, description="OpenAI-compatible server for the VLM, captioner and judge.")
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("openai_api_key", "OPENAI_API_KEY", "LENSGRAPH_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        None, validation_alias=AliasChoices("openai_base_url", "OPENAI_BASE_URL", "LENSGRAPH_OPENAI_BASE_URL")
    )
    max_concurrency: int = Field(4, ge=1, le=256, description="Concurrent requests per model backend.")
    timeout: float = Field(120.0, gt=0, description="Seconds before a model request is abandoned (then retried).")
    image_max_side: int = Field(
        1024, ge=64, le=8192, description="Images go to models at most this many pixels on their longest side."
    )
    retries: int = Field(3, ge=0, le=10, description="Retries of a model call on 429/5xx/connection errors.")
    cache: Path | None = Field(None, description="Call cache file [default: next to the database].")
    no_cache: bool = Field(False, description="Bypass the call cache.")
    prompts: str = Field("default", description="Prompt set: a built-in name or a folder.")

    # -- the reasoning graph --
    k: int = Field(20, ge=1, le=1000, description="Candidates retrieved and verified.")
    query_text: bool = Field(
        True,
        description="Also retrieve with the caption + instruction text beside the LLM's descriptions (a safety net for weak LLMs).",
    )
    query_weight: float = Field(
        3.0, gt=0.0, le=100.0,
        description="With query_text: the weight of the caption + instruction against each description's 1 (tuned on coco-mini dev).",
    )
    verify_batch: bool = Field(
        False, description="Ask all of a candidate's questions in one call (fewer calls; meant for caption mode)."
    )
    alpha: int = Field(3, ge=0, le=100, description="Top candidates the judge looks at.")
    verifier: Literal["auto", "model", "captions"] = Field(
        "auto",
        description="Who answers the verification questions: 'model' (the VLM; in caption mode the LLM reading "
        "captions), 'captions' (the stored caption checked for each question's object: no model call), or "
        "'auto' (captions in caption mode, where they measured better and cost nothing; else the model).",
    )
    rerank: Literal["fuse", "imagescope"] = Field(
        "fuse",
        description="Re-ranking rule: 'fuse' (retrieval score + weighted evidence) or 'imagescope' (sort by matching "
        "answers, then the first judged Yes to rank 1).",
    )
    verify_weight: float = Field(
        8.0, ge=0.0, le=100.0,
        description="Weight of verification evidence in 'fuse', shared among the questions (chosen out of fold on coco-mini dev).")
    verify_margin: float = Field(
        2.0, gt=0.0, le=100.0,
        description="The most one verification question can move a candidate, in standardised retrieval scores "
        "(chosen out of fold on coco-mini dev): no single answer overturns an order retrieval was sure of.")
    unnamed_trust: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Weight of a question about a thing the request does not name (the plan's own guess), "
        "against 1 for a thing it names (chosen out of fold on coco-mini dev).")
    judge_weight: float = Field(
        0.25, ge=0.0, le=100.0,
        description="Weight of the judge's evidence in 'fuse' (on coco-mini dev with a 0.5B model any larger weight hurt).")
    judge_mode: Literal["listwise", "pairwise"] = Field(
        "listwise", description="'listwise' (one call names the best of the top alpha) or 'pairwise' (one call per candidate)."
    )
    plan_checks: str = Field(
        "default",
        description="Consistency checks applied to the plan: 'default' (those chosen out of fold on coco-mini dev), "
        "'all', 'none', or a comma-separated list.")
    stages: str | None = Field(
        None, description="Run up to this stage: retrieve, reason, verify or judge [default: as far as the models allow]."
    )

    @property
    def resolved_stages(self) -> str:
        """The stages to run: as asked, else as far as the configured models allow, and only as far
        as a stage can pay (`skipped_stages`)."""
        if self.stages:
            return self.stages
        if self.llm and self.vlm:
            return "verify" if self.skipped_stages else "judge"
        return "reason" if self.llm else "retrieve"

    def definition(self) -> dict[str, Any]:
        """What a run's results depend on: every setting but the operational ones, resolved as the run
        uses them (a benchmark run refuses to resume into a folder made with another)."""
        values = {name: getattr(self, name) for name in type(self).model_fields if name not in OPERATIONAL}
        values.update(stages=self.resolved_stages, verifier=self.resolved_verifier,
                      plan_checks=list(self.resolved_plan_checks))
        return {name: str(value) if isinstance(value, Path) else value for name, value in values.items()}

    @property
    def skipped_stages(self) -> dict[str, str]:
        """Stages left out by default, and why (the trace says so)."""
        if not self.stages and self.llm and self.vlm == "caption" and (self.judge or "caption") == "caption":
            return {"judge": "caption mode: a text LLM judging captions changed no ranking on coco-mini dev "
                             "(bench/RESULTS.md, Judges); --stages judge runs it"}
        return {}

    @property
    def resolved_device(self) -> str:
        """The device 'auto' stands for here (imports torch: only for commands that run a local model)."""
        return resolve_device(self.device)

    @property
    def cache_path(self) -> Path:
        return self.cache or self.db.parent / "calls.sqlite"

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: str | None) -> str | None:
        try:
            return check_stages(value)
        except LensgraphError as e:
            raise ValueError(str(e)) from None

    @property
    def resolved_verifier(self) -> str:
        if self.verifier == "auto":
            return "captions" if self.vlm == "caption" else "model"
        return self.verifier

    @field_validator("plan_checks")
    @classmethod
    def _plan_checks(cls, value: str) -> str:
        from lensgraph.pipeline.reasoning.planning import CHECKS

        names = [n.strip() for n in value.split(",") if n.strip()]
        if value in ("default", "all", "none"):
            return value
        if unknown := [n for n in names if n not in CHECKS]:
            raise ValueError(f"unknown plan check(s) {', '.join(unknown)}; known: all, none, {', '.join(CHECKS)}")
        return ",".join(names)

    @property
    def resolved_plan_checks(self) -> tuple[str, ...]:
        from lensgraph.pipeline.reasoning.planning import CHECKS, DEFAULT_CHECKS

        if self.plan_checks in ("all", "default"):
            return CHECKS if self.plan_checks == "all" else DEFAULT_CHECKS
        return () if self.plan_checks == "none" else tuple(self.plan_checks.split(","))

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,60}[A-Za-z0-9]", value):
            raise ValueError(
                "index names are 3-62 characters of letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config_path()))


def load_settings(**flags: Any) -> Settings:
    """Build Settings from CLI flags; flags left at None fall through to env, toml and defaults."""
    if CONFIG_ENV in os.environ and not config_path().is_file():
        raise LensgraphError(f"{CONFIG_ENV} points to {config_path()}, which does not exist.")
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in e.errors()
        )
        raise LensgraphError(f"Invalid settings ({problems}). Check the flags, LENSGRAPH_* variables and {config_path()}.") from None
    except Exception as e:  # a malformed toml file
        raise LensgraphError(f"Could not read settings from {config_path()}: {e}") from None
