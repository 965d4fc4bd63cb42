"""What callers send: the REST API's parameters and bodies, with the limits this server enforces
declared in them, so /openapi.json states each one and a request the schema allows is never refused
as malformed. Each limit has one definition, which both the checks and the schema read: ToolConfig's
`max_k` and `max_text_chars`, `operations.THREAD_ID`, and the stages this server runs
(`operations.stages_available`, put in the document by adapters/web/openapi.py).

Rules across fields (a text or a reference; one reference at most) are checked by
`operations.check_params` / `has_reference`; `search_rules` and `one_reference` state them in the
schema. Invalid input, whichever check finds it (FastAPI's validation or the operations'), is a 400
with a JSON `{"error": ...}`.

No `from __future__ import annotations` here: FastAPI reads the annotations at run time, and they hold
this server's limits, which are local to the factories below.
"""

from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Annotated, Any

from fastapi import File, Form, Path, Query, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from lensgraph.adapters.tools import ToolConfig
from lensgraph.adapters.web.operations import THREAD_ID, THREAD_ID_CHARS, SearchParams

NON_BLANK = "[^\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
"""A character `str.strip()` keeps (Python's whitespace, listed; tests/test_web_api.py checks the
list): a text that matches it is not blank. JSON Schema's `\\S` would differ (\\x1c-\\x1f, \\x85, \\ufeff)."""
DATA_URL_FORMAT = "data-url"
"""The schema's `format` for an image as a data URL (RFC 2397, base64: data:image/png;base64,...), never
empty (schemathesis generated "" both as valid and as invalid data for the format alone). No pattern
beside it: a string can match one and still be no image (a 400), and a client generating requests
needs a strategy for the format itself (tests/test_rest_conformance.py registers one)."""
IMAGE_TYPES = "image/*"
"""The upload's media types: any image Pillow reads (anything else is a 400 that says so)."""

UPLOAD = "reference"
SEARCH_REFERENCES = (UPLOAD, "reference_id", "reference_path")
QUERY_REFERENCES = ("reference_id", "reference_path")
CHAT_REFERENCES = ("reference_id", "reference_path", "reference_image")

DataUrl = Annotated[str, Field(min_length=1, json_schema_extra={"format": DATA_URL_FORMAT})]

TEXT = "What to look for, or how the reference should change. Empty with a reference: images like it."
K = "How many results (at most the server's limit, max_k in /api/index)."
STAGES = "Run up to this stage (default: as far as the models allow); the values are the stages this server runs."
THRESHOLD = "Keep only results whose evidence (relevance) reaches this (0-1); unverified results are dropped."
REF_ID = "An indexed image as the reference, by id (its file must lie in an allowed folder)."
REF_PATH = "An image file as the reference, relative to an allowed folder (or absolute inside one)."

ThreadId = Annotated[str, Path(pattern=THREAD_ID.pattern, max_length=THREAD_ID_CHARS,
                               description="The conversation's id: kept by the server, the same id resumes it.")]


# -- rules across fields, for the schema -----------------------------------------------------------


def given(name: str) -> dict[str, Any]:
    """A field that counts as given: present, a string, not empty (empty and null mean absent). An
    upload counts by its presence: its part is a file, even an empty one (which is then no image)."""
    if name == UPLOAD:
        return {"required": [name]}
    return {"required": [name], "properties": {name: {"type": "string", "minLength": 1}}}


def one_reference(references: Sequence[str]) -> dict[str, Any]:
    """No two references at once (`operations.has_reference` refuses them)."""
    return {"not": {"anyOf": [{"allOf": [given(a), given(b)]} for a, b in combinations(references, 2)]}}


def search_rules(references: Sequence[str]) -> dict[str, Any]:
    """A search needs a text that is not blank or a reference, and takes one reference at most
    (`operations.check_params`)."""
    text = {"required": ["text"], "properties": {"text": {"type": "string", "pattern": NON_BLANK}}}
    return {"anyOf": [text, *map(given, references)], **one_reference(references)}


# -- this server's requests ------------------------------------------------------------------------


def search_form(config: ToolConfig) -> Callable[..., SearchParams]:
    """The search's multipart form (POST), as a dependency. FastAPI reads an empty field as an absent
    one; an upload is given as soon as its part is sent."""

    def form(
        text: Annotated[str, Form(max_length=config.max_text_chars, description=TEXT)] = "",
        k: Annotated[int | None, Form(ge=1, le=config.max_k, description=K)] = None,
        stages: Annotated[str | None, Form(description=STAGES)] = None,
        threshold: Annotated[float | None, Form(ge=0.0, le=1.0, description=THRESHOLD)] = None,
        reference: Annotated[UploadFile | None, File(description="A reference image, uploaded.")] = None,
        reference_id: Annotated[str | None, Form(description=REF_ID)] = None,
        reference_path: Annotated[str | None, Form(description=REF_PATH)] = None,
    ) -> SearchParams:
        upload = reference.file.read() if reference is not None else None  # the body is already size-capped
        return SearchParams(text, k, stages, threshold, upload, reference_id or None, reference_path or None)

    return form


def search_query(config: ToolConfig) -> Callable[..., SearchParams]:
    """The same as query parameters (GET, for EventSource), without an upload. An empty `stages` is
    refused here (the schema's values do not include it); empty references are absent."""

    def query(
        text: Annotated[str, Query(max_length=config.max_text_chars, description=TEXT)] = "",
        k: Annotated[int | None, Query(ge=1, le=config.max_k, description=K)] = None,
        stages: Annotated[str | None, Query(description=STAGES)] = None,
        threshold: Annotated[float | None, Query(ge=0.0, le=1.0, description=THRESHOLD)] = None,
        reference_id: Annotated[str | None, Query(description=REF_ID)] = None,
        reference_path: Annotated[str | None, Query(description=REF_PATH)] = None,
    ) -> SearchParams:
        return SearchParams(text, k, stages, threshold, None, reference_id or None, reference_path or None)

    return query


class ChatIn(BaseModel):
    """A chat turn's body; `chat_body` gives it this server's limits."""

    message: str = Field(description="The next message of the conversation.")
    k: int | None = Field(None, description="Results to return (at most max_k).")
    reference_id: str | None = Field(None, description="An indexed image the thread refers to from now on.")
    reference_path: str | None = Field(None, description="An image file under an allowed folder, the same way.")
    reference_image: str | None = Field(None, description="An image of the caller's as a data URL (data:image/...;base64,...).")


def chat_body(config: ToolConfig) -> Callable[..., ChatIn]:
    """The chat turn's JSON body, as a dependency (the route's type stays ChatIn)."""

    class ChatRequest(ChatIn):
        model_config = ConfigDict(json_schema_extra=one_reference(CHAT_REFERENCES))

        # not blank: stated for the schema, refused by ImageTools.check_text (with a clearer message than a regex's)
        message: str = Field(max_length=config.max_text_chars, json_schema_extra={"pattern": NON_BLANK},
                             description="The next message of the conversation.")
        k: Annotated[int, Field(ge=1, le=config.max_k)] | None = Field(None, description="Results to return (at most max_k).")
        reference_image: DataUrl | None = Field(
            None, description="An image of the caller's as a data URL (data:image/...;base64,...).")

    def body(body: ChatRequest) -> ChatIn:
        return body

    return body
