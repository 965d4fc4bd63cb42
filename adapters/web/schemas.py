"""The REST API's JSON shapes. Every answer is validated against one of these (FastAPI's
response_model), so a field that is not declared here never leaves the server; they are also what
`/openapi.json` and `/docs` describe. What callers send is in adapters/web/inputs.py."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    error: str = Field(description="What went wrong and what to do; redacted, never a traceback.")


class Check(BaseModel):
    question: str
    expected: str = Field(description="The answer the wanted image gives: yes or no.")
    answer: str | None = Field(description="The verifier's reply (null when the call failed).")
    p_expected: float | None = Field(description="Probability of the expected answer.")


class Verdict(BaseModel):
    verdict: bool | None = Field(description="The judge's Yes (true) / No (false); null when unclear.")
    p_yes: float | None = None


class Evidence(BaseModel):
    questions: list[Check]
    passed: int = Field(description="Questions whose expected answer has probability > 0.5.")
    judge: Verdict | None = None
    relevance: float | None = Field(description="Mean probability of the expected answers (and of the judge's Yes).")


class ResultOut(BaseModel):
    rank: int = Field(description="1 is the best match.")
    id: str = Field(description="The image's id in the index (the sha256 of its bytes).")
    name: str | None = Field(description="The file, relative to the allowed folder it lies in; null outside them.")
    image_url: str | None = Field(description="The image (null when it lies outside the allowed folders).")
    thumbnail_url: str | None = Field(description="A 256-px JPEG thumbnail.")
    score: float = Field(description="The ranking score (retrieval fused with the evidence); comparable within one search.")
    caption: str | None = Field(description="The stored caption.")
    relevance: float | None = Field(description="As in evidence; null when unverified.")
    evidence: Evidence | None = Field(description="Verification and judge evidence; null when unverified.")


class Edit(BaseModel):
    type: str = Field(description="addition, removal, modification, comparison or retention.")
    text: str


class Question(BaseModel):
    question: str
    expected: str


class Explanation(BaseModel):
    instruction: str
    caption: str = Field(description="How the reference was read (\"A blank image.\" without one).")
    reference_id: str | None = None
    edits: list[Edit] = []
    descriptions: list[str] = Field([], description="The target descriptions retrieval embedded.")
    questions: list[Question] = Field([], description="The verification questions with their expected answers.")


class TraceEntry(BaseModel):
    stage: str
    seconds: float
    calls: int = Field(description="Model calls made (cached ones are cache_hits).")
    cache_hits: int = 0
    failures: int = 0
    rounds: int = 0
    warnings: list[str] = Field([], description="What fell back or degraded (the search still ran).")
    source: str | None = None
    fixes: list[str] = Field([], description="What the plan checks corrected.")


class StageEvent(BaseModel):
    """Data of an SSE `stage` event."""

    stage: str
    trace: list[TraceEntry]
    explanation: Explanation
    results: list[ResultOut] | None = Field(None, description="The ranking after this stage (retrieve, verify, judge).")


class SearchOut(BaseModel):
    """A search's answer (also the data of the SSE `done` event)."""

    query: str
    k: int
    threshold: float | None
    stages: list[str] = Field(description="The stages that ran, in order.")
    explanation: Explanation
    trace: list[TraceEntry]
    warnings: list[str]
    results: list[ResultOut]


class IndexOut(BaseModel):
    name: str
    images: int
    captions: int
    clip: str
    caption_encoder: str | None
    stages: str = Field(description="The last stage this server's models can run.")
    stages_available: list[str]
    indexing_enabled: bool
    default_k: int
    max_k: int
    max_text_chars: int
    max_image_bytes: int
    roots: list[str] = Field(description="Names (not paths) of the folders whose images may be shown.")
    images_visible: bool
    token_required: bool


class Turn(BaseModel):
    message: str
    description: str = Field(description="The target description after this message.")


class ChatOut(BaseModel):
    thread_id: str
    description: str = Field(description="The target description after the last message.")
    reference_id: str | None = Field(None, description="The thread's reference image, by id (sha256), if the web gave it one.")
    turns: list[Turn]
    explanation: Explanation | None = Field(description="How the last turn's search read the description.")
    trace: list[TraceEntry] = Field(description="The last turn's stages (refine, then the search's).")
    results: list[ResultOut] = Field(description="The last turn's results, with their evidence.")


def event_schemas() -> dict[str, Any]:
    """JSON Schemas of the stream's event data, for the stream endpoint's documentation."""
    return {"stage": StageEvent.model_json_schema(), "done": SearchOut.model_json_schema(), "error": ErrorOut.model_json_schema()}
