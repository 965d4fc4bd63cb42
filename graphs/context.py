"""Run-time context of the retrieval graph: models, the index and parameters (never in the state)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.backends import Models
from pipeline.prompts import PromptSet
from pipeline.searcher import Searcher

STAGE_ORDER = ("retrieve", "reason", "verify", "judge")


@dataclass
class Context:
    searcher: Searcher
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
    query_text: bool = False
    """Average the caption + instruction text in with the LLM's descriptions at retrieval."""
    verify_batch: bool = False
    """Ask all of a candidate's questions in one call instead of one call per question."""
    depth: int = 0
    """Ranking depth kept in `rankings` (evaluation needs 50); 0 means k. Only the top k are re-ranked."""
    workers: int = 8
    """Concurrent model calls within a stage (each backend also caps its own)."""

    def runs(self, stage: str) -> bool:
        """Whether `stage` (reason, verify or judge) is within the requested prefix."""
        return STAGE_ORDER.index(self.stages) >= STAGE_ORDER.index(stage)
