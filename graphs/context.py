"""Run-time context of the retrieval graph: models, the index and parameters (never in the state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lensgraph.pipeline.models.backends import Models
from lensgraph.pipeline.reasoning.evidence import CaptionMatcher
from lensgraph.pipeline.reasoning.lexicon import Lexicon, load_lexicon
from lensgraph.pipeline.models.prompts import PromptSet
from lensgraph.pipeline.gallery import Gallery

STAGE_ORDER = ("retrieve", "reason", "verify", "judge")


@dataclass
class Context:
    gallery: Gallery
    models: Models
    prompts: PromptSet
    k: int = 20
    """Candidates retrieved, verified and ranked."""
    tau: float = 0.15
    """Caption-channel weight in the fused score."""
    alpha: int = 3
    """How many top candidates the judge looks at."""
    stages: str = "judge"
    """Run up to this stage: retrieve (no LLM), reason, verify, judge."""
    query_text: bool = True
    query_weight: float = 3.0
    """The weight of the caption + instruction text against each description's 1 (with query_text)."""
    """Average the caption + instruction text in with the LLM's descriptions at retrieval."""
    verify_batch: bool = False
    """Ask all of a candidate's questions in one call instead of one call per question."""
    keep_reference: bool = False
    """Leave the reference image in the results (FashionIQ's and CIRCO's protocols); by default it is removed."""
    depth: int = 0
    """Ranking depth kept in `rankings` (evaluation needs 50); 0 means k. Only the top k are re-ranked."""
    workers: int = 8
    """Concurrent model calls within a stage (each backend also caps its own)."""
    verifier: str = "model"
    """'model' (the verifier model answers) or 'captions' (stored captions checked, no model call)."""
    rerank: str = "fuse"
    """'fuse' (retrieval + weighted evidence) or 'imagescope' (count, then first Yes)."""
    verify_weight: float = 8.0
    verify_margin: float = 2.0
    """The most one question can move a candidate, in standardised retrieval scores."""
    unnamed_trust: float = 0.5
    """The weight of a question about a thing the request does not name, against 1 for one it names."""
    judge_weight: float = 0.25
    judge_mode: str = "listwise"
    """'listwise' (one call for the top alpha) or 'pairwise' (one call per judged candidate)."""
    plan_checks: tuple[str, ...] = ()
    """Consistency checks applied to the plan (pipeline/reasoning/planning.py: CHECKS)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Stages left out by default, with the reason the trace gives (Settings.skipped_stages)."""
    matcher: CaptionMatcher | None = None
    """Finds a thing in a caption (the 'captions' verifier, the plan checks); words only when None."""

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
        return STAGE_ORDER.index(self.stages) >= STAGE_ORDER.index(stage)
