"""Run-time context of the retrieval graph: the gallery, models, prompts and settings (never in the state)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from lensgraph.pipeline.models.backends import Models
from lensgraph.pipeline.reasoning.evidence import CaptionMatcher
from lensgraph.pipeline.reasoning.lexicon import Lexicon, load_lexicon
from lensgraph.pipeline.models.prompts import PromptSet
from lensgraph.pipeline.settings import STAGES, Settings
from lensgraph.pipeline.gallery import Gallery


@dataclass
class Context:
    """What a graph run needs besides its state: the gallery, the models and prompts, and the settings
    they were built from. The run parameters are read from `settings` (declared once, there); the
    properties below are the ones a setting resolves into."""

    gallery: Gallery
    models: Models
    prompts: PromptSet
    settings: Settings
    depth: int = 0
    """Ranking depth kept in `rankings` (evaluation needs 50); 0 means k. Only the top k are re-ranked."""
    keep_reference: bool = False
    """Leave the reference image in the results (FashionIQ's and CIRCO's protocols); by default it is removed."""
    matcher: CaptionMatcher | None = None
    """Finds a thing in a caption (the 'captions' verifier, the plan checks); words only when None."""

    def configured(self, **changes: Any) -> Context:
        """A copy with some settings changed (k, stages, ...); this context is shared and never changed."""
        return replace(self, settings=self.settings.model_copy(update=changes)) if changes else self

    @property
    def stages(self) -> str:
        """Run up to this stage: retrieve (no LLM), reason, verify, judge."""
        return self.settings.resolved_stages

    @property
    def skipped(self) -> dict[str, str]:
        """Stages left out by default, with the reason the trace gives."""
        return self.settings.skipped_stages

    @property
    def verifier(self) -> str:
        """'model' (the verifier model answers) or 'captions' (stored captions checked, no model call)."""
        return self.settings.resolved_verifier

    @property
    def plan_checks(self) -> tuple[str, ...]:
        """Consistency checks applied to the plan (pipeline/reasoning/planning.py: CHECKS)."""
        return self.settings.resolved_plan_checks

    @property
    def workers(self) -> int:
        """Concurrent model calls within a stage (each backend also caps its own)."""
        return self.settings.max_concurrency * 2

    @property
    def lexicon(self) -> Lexicon | None:
        return self.matcher.lexicon if self.matcher else load_lexicon()

    def mentions(self, phrase: str, text: str) -> bool:
        """Whether `text` (a caption) mentions `phrase`."""
        if not text.strip():
            return False
        p = (self.matcher or CaptionMatcher()).probability(phrase, text)
        return p is not None and p >= 0.5

    def runs(self, stage: str) -> bool:
        """Whether `stage` (reason, verify or judge) is within the requested prefix."""
        return STAGES.index(self.stages) >= STAGES.index(stage)
