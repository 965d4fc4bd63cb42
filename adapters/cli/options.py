"""The CLI's options, each declared once, in groups that commands share (`run_options`).

A command names the groups it takes; it receives the given values as `flags`, for
`load_settings(**flags)` (None: not given, so the environment, the config file or the default decides).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

IndexOpt = Annotated[Optional[str], typer.Option("--index", help="Index name inside the database \\[default: default].")]
DbOpt = Annotated[Optional[Path], typer.Option("--db", help="Embedded Chroma database folder \\[default: ~/.local/share/lensgraph/db].")]
UrlOpt = Annotated[Optional[str], typer.Option("--chroma-url", help="Use a Chroma server, e.g. http://127.0.0.1:8000.")]
ClipOpt = Annotated[
    Optional[str],
    typer.Option("--clip", help="CLIP MODEL:PRETRAINED, a checkpoint (MODEL:/path), local-dir:/path, or MODEL:none (random, tests only)."),
]
TextEncOpt = Annotated[Optional[str], typer.Option("--text-encoder", help="Caption encoder: 'clip' or 'st:NAME_OR_PATH'.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")]
TauOpt = Annotated[Optional[float], typer.Option(
    "--tau", min=0.0, max=1.0, help="Caption-channel weight (1 = captions only) \\[default: 0.15; eval in caption mode: 1].")]
CaptionerOpt = Annotated[Optional[str], typer.Option("--captioner", help="Captioner \\[default: the vision model].")]
JudgeOpt = Annotated[Optional[str], typer.Option("--judge", help="Judge \\[default: the vision model].")]
AlphaOpt = Annotated[Optional[int], typer.Option("--alpha", min=0, help="Top candidates the judge looks at \\[default: 3].")]
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help="Where CLIP and local models run: auto (CUDA, then MPS, then CPU), cpu, cuda or mps \\[default: auto].")]
ClipRuntimeOpt = Annotated[Optional[str], typer.Option(
    "--clip-runtime", help="How CLIP runs: auto (ONNX Runtime where it can, else torch), torch or onnx \\[default: auto].")]
LlmOpt = Annotated[Optional[str], typer.Option("--llm", help="Text LLM: openai:MODEL or hf:REPO_OR_PATH.")]
VlmOpt = Annotated[Optional[str], typer.Option("--vlm", help="Vision model: openai:MODEL, hf:REPO_OR_PATH, or caption (caption mode).")]
LlmUrlOpt = Annotated[Optional[str], typer.Option("--llm-base-url", help="OpenAI-compatible server for the LLM.")]
VlmUrlOpt = Annotated[Optional[str], typer.Option("--vlm-base-url", help="OpenAI-compatible server for the vision model.")]
StagesOpt = Annotated[
    Optional[str], typer.Option("--stages", help="Run up to: retrieve, reason, verify, judge \\[default: as far as the models allow].")
]
PromptsOpt = Annotated[Optional[str], typer.Option("--prompts", help="Prompt set: a built-in name (default, cireval) or a folder.")]
NoCacheOpt = Annotated[Optional[bool], typer.Option("--no-cache", help="Bypass the model call cache.")]
VerifierOpt = Annotated[Optional[str], typer.Option(
    "--verifier", help="Who answers the questions: model (the VLM) or captions (stored captions matched, no model call).")]
RerankOpt = Annotated[Optional[str], typer.Option(
    "--rerank", help="fuse (retrieval score + weighted evidence) or imagescope (count matches, first Yes to rank 1).")]
VerifyWeightOpt = Annotated[Optional[float], typer.Option("--verify-weight", min=0.0, help="Weight of verification evidence \\[default: 8].")]
VerifyMarginOpt = Annotated[Optional[float], typer.Option(
    "--verify-margin", min=0.0, help="The most one question can move a candidate, in standardised retrieval scores \\[default: 2].")]
UnnamedTrustOpt = Annotated[Optional[float], typer.Option(
    "--unnamed-trust", min=0.0, max=1.0, help="Weight of questions about things the request does not name \\[default: 0.5].")]
JudgeWeightOpt = Annotated[Optional[float], typer.Option("--judge-weight", min=0.0, help="Weight of the judge's evidence \\[default: 0.25].")]
JudgeModeOpt = Annotated[Optional[str], typer.Option("--judge-mode", help="listwise (one call) or pairwise (a call per candidate) \\[default: listwise].")]
PlanChecksOpt = Annotated[Optional[str], typer.Option(
    "--plan-checks", help="Plan consistency checks: default, all, none, or a comma-separated list \\[default: default].")]
QueryWeightOpt = Annotated[Optional[float], typer.Option(
    "--query-weight", min=0.0, help="Weight of the caption + instruction against each description's 1 \\[default: 3].")]
VerifyBatchOpt = Annotated[Optional[bool], typer.Option("--verify-batch", help="All of a candidate's questions in one call.")]
QueryTextOpt = Annotated[Optional[bool], typer.Option(
    "--query-text/--no-query-text", help="Also retrieve with caption + instruction beside the LLM's descriptions \\[default: on].")]
KOpt = Annotated[Optional[int], typer.Option("--k", min=1, max=1000, help="Candidates retrieved, verified and shown \\[default: 20].")]

LOCATION = {"index": IndexOpt, "db": DbOpt, "chroma_url": UrlOpt}
"""Which index, in which database."""
ENCODERS = {"clip": ClipOpt, "text_encoder": TextEncOpt, "device": DeviceOpt, "clip_runtime": ClipRuntimeOpt}
"""How images and texts are embedded, and where."""
MODELS = {"llm": LlmOpt, "vlm": VlmOpt, "captioner": CaptionerOpt, "judge": JudgeOpt, "llm_base_url": LlmUrlOpt,
          "vlm_base_url": VlmUrlOpt, "prompts": PromptsOpt, "no_cache": NoCacheOpt}
"""The models of the reasoning stages, their servers and prompts."""
SEARCH = {"k": KOpt, "tau": TauOpt, "stages": StagesOpt, "alpha": AlphaOpt, "verifier": VerifierOpt, "rerank": RerankOpt,
          "verify_weight": VerifyWeightOpt, "verify_margin": VerifyMarginOpt, "unnamed_trust": UnnamedTrustOpt,
          "judge_weight": JudgeWeightOpt, "judge_mode": JudgeModeOpt, "plan_checks": PlanChecksOpt,
          "verify_batch": VerifyBatchOpt, "query_text": QueryTextOpt, "query_weight": QueryWeightOpt}
"""How a search runs: candidates, stages, verification and fusion."""
RUN = {**LOCATION, **ENCODERS, **MODELS, **SEARCH}
"""Everything a search, a chat, an evaluation or a server is configured with."""


def run_options(*groups: dict[str, Any]) -> Callable[[F], F]:
    """Add the options of `groups` to a command, after its own; the command gets them as `flags`."""
    options = {name: annotation for group in groups for name, annotation in group.items()}

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "flags"]
        if clash := [p.name for p in own if p.name in options]:
            raise TypeError(f"{command.__name__} declares shared options itself: {clash}")
        parameters = own + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
                            for name, annotation in options.items()]

        @functools.wraps(command)
        def with_flags(**values: Any) -> Any:
            flags = {name: values.pop(name) for name in options}
            return command(**values, flags=flags)

        # typer reads the parameters from the signature: the command's own, then the shared ones
        with_flags.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        with_flags.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_flags  # type: ignore[return-value]

    return decorate
