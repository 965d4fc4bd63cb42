"""lensgraph as an MCP server: the agent tools of `lensgraph.adapters.tools`, over stdio or streamable HTTP.

    server = build_server(ImageTools(settings, ToolConfig(roots=("~/Pictures",))))
    serve(tools, transport="stdio")      # what an MCP host (Claude Desktop, an IDE) launches
    serve(tools, transport="http", port=8000)   # http://127.0.0.1:8000/mcp

A thin adapter: every check (paths under the roots, size caps, k and text limits, concurrency,
indexing off unless enabled, secrets redacted) lives in `ImageTools`, so every adapter gets the
same limits. Here each operation becomes an MCP tool with typed, described parameters and a typed
result (`structuredContent`, plus a short text for hosts that only show text). Arguments are
strictly typed: one the input schema rejects is refused naming the argument and what it must be
(`LensgraphServer`). A refusal becomes an MCP tool error result (`isError`) with the caller-safe
message; so does any other failure, its message redacted (`ImageTools.failure_message`). The
server keeps answering either way, and its log handlers redact every record
(`lensgraph.pipeline.redaction.install_log_redaction`).

In stdio mode stdout carries the protocol only: logs go to stderr, progress bars are off, and the
SDK's stdio transport points fd 1 at stderr while it serves.

Started by `lensgraph mcp` (run.py), the one command line for it.
"""

import base64
import json
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError as McpToolError
from mcp.server.mcpserver.exceptions import UnexpectedToolError
from mcp_types import CallToolResult, ImageContent, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, BeforeValidator, Field, ValidationError

from lensgraph.adapters.tools import ImageTools
from lensgraph.pipeline import __version__
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.redaction import install_log_redaction, redact

log = logging.getLogger("lensgraph.mcp")

M = TypeVar("M", bound=BaseModel)
THUMBNAILS = 3  # top results returned as image content beside the structured result

INSTRUCTIONS = """\
Search a user's indexed photo collection with natural language.
- search_images: describe the wanted image in words ("a red bicycle leaning on a wall at night"), or
  give a reference_image plus the change wanted ("the same scene but with a dog instead of the cat").
  Results are ranked best first; each has a path (relative to an allowed folder; null for an image
  outside them) you can pass back as reference_image or to describe_image.
- describe_image: the caption of one image (stored at indexing time, or written by a vision model).
- index_info: what the collection holds and which pipeline stages run.
Image paths must lie inside the folders the operator allowed; a reference image may also be a
base64 data URL. Errors explain what to change."""


# -- results: the structured content each tool returns -----------------------------------------


class SearchHit(BaseModel):
    rank: int = Field(description="1 is the best match.")
    id: str = Field(description="The image's id in the index (a content hash).")
    path: str | None = Field(
        description="The image file, relative to the allowed folder it lies in (null when it lies in none); "
        "usable as reference_image or in describe_image.")
    score: float = Field(description="Retrieval score (higher is better; comparable within one search only).")
    caption: str | None = Field(description="The image's stored caption, if it has one.")
    relevance: float | None = Field(
        None, description="Mean probability that the image passed the verification questions (and the judge); "
        "null when it was not verified.")
    evidence: dict[str, Any] | None = Field(
        None, description="Each verification question with the expected answer, the answer and its probability, "
        "and the judge's verdict.")


class SearchOutput(BaseModel):
    query: str = Field(description="The query as searched.")
    reference_caption: str | None = Field(description="How the reference image was read, when one was given.")
    descriptions: list[str] = Field(description="The target descriptions that were retrieved for.")
    stages: list[str] = Field(description="Pipeline stages that ran, in order.")
    warnings: list[str] = Field(description="Stages that fell back or degraded (the search still succeeded).")
    results: list[SearchHit] = Field(description="Matches, best first.")


class ImageDescription(BaseModel):
    id: str = Field(description="The image's content hash (its id in the index).")
    caption: str = Field(description="What the image shows.")
    source: str = Field(description="'index' for the stored caption, else the captioning model's spec.")


class SkippedFile(BaseModel):
    file: str
    reason: str


class IndexingReport(BaseModel):
    added: int = Field(description="Images newly added.")
    unchanged: int = Field(description="Images already indexed.")
    skipped: list[SkippedFile] = Field(description="Files that were not indexed, with the reason.")
    images: int = Field(description="Images in the index now.")


class IndexSummary(BaseModel):
    name: str
    images: int = Field(description="Images in the index.")
    captions: int = Field(description="Images with a stored caption.")
    clip: str = Field(description="The CLIP model that embedded the images.")
    caption_encoder: str | None = Field(description="The text encoder of the caption channel, if any.")
    stages: str = Field(description="How far the pipeline runs: retrieve, reason, verify or judge.")
    indexing_enabled: bool = Field(description="Whether index_images is available.")


# -- the server --------------------------------------------------------------------------------


class LensgraphServer(MCPServer):
    """An `MCPServer` that answers arguments which fail the input schema in words of its own: the
    argument and what it must be. (The SDK answers with pydantic's report: its error codes, the
    rejected values echoed back, and a link to pydantic's website.) The tools' arguments are strict
    (`Field(strict=True)`), so only what the schema allows passes: no "3" or true for an integer."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except McpToolError as e:
            # the SDK raises a ToolError caused by a ValidationError for the arguments alone (a tool's
            # own failures are ToolErrors of ours; a wrong result is an UnexpectedToolError)
            if isinstance(e, UnexpectedToolError) or not isinstance(e.__cause__, ValidationError):
                raise
            schema = next((t.input_schema for t in await self.list_tools() if t.name == name), {})
            raise McpToolError(f"Invalid arguments for {name}: {argument_problems(schema, e.__cause__)}") from e.__cause__


WHOLE_NUMBER = BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)
"""For a strict int: 2.0 is an integer in JSON Schema (a JSON number without a fraction), so it is taken as 2."""

JSON_KINDS = {"string": "a string", "integer": "a whole number", "number": "a number", "boolean": "true or false",
              "null": "null", "array": "a list", "object": "an object"}


def argument_problems(schema: dict[str, Any], error: ValidationError) -> str:
    """What is wrong with each argument, in the terms of the tool's input schema: "k must be a whole
    number from 1 to 20, not a string". The caller's text is not echoed (a string could be anything):
    a number, true, false or null is named by its value, anything else by its kind."""
    properties = schema.get("properties", {})
    problems: dict[str, str] = {}
    for e in error.errors():
        name = str(e["loc"][0]) if e["loc"] else "arguments"
        expected = _expected(properties.get(name, {}))
        problem = (f"{name} is required ({expected})" if e["type"] == "missing"
                   else f"{name} must be {expected}, not {_kind(e['input'])}")
        problems.setdefault(name, problem)  # a union reports each member: one problem per argument
    return "; ".join(problems.values()) + "."


def _expected(prop: dict[str, Any]) -> str:
    kinds = [JSON_KINDS.get(str(s["type"]), str(s["type"])) for s in prop.get("anyOf", [prop]) if "type" in s]
    if kinds and "minimum" in prop and "maximum" in prop:
        kinds[0] += f" from {prop['minimum']} to {prop['maximum']}"
    return " or ".join(kinds) or "as the input schema says"


def _kind(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), "another type")


def build_server(tools: ImageTools, *, warm_up: bool = False) -> MCPServer:
    """An `MCPServer` exposing `tools`; index_images is registered only when indexing is enabled.
    With warm_up, models and the index load in the background as soon as the server starts."""
    install_log_redaction(tools.settings)
    server = LensgraphServer(
        "lensgraph",
        title="lensgraph image search",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=warm_up_lifespan(tools) if warm_up else None,
        log_level="WARNING",
    )
    add_search_images(server, tools)  # registration order is the order tools/list shows
    add_describe_image(server, tools)
    if tools.config.allow_indexing:
        add_index_images(server, tools)
    add_index_info(server, tools)
    return server


READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


def answer(tools: ImageTools, shape: type[M], operation: Callable[..., dict[str, Any]], *args: Any,
           text: Callable[[M], str], images: Callable[[M], list[ImageContent]] | None = None) -> CallToolResult:
    """Run one ImageTools operation, its result checked against `shape` and summed up by `text`
    (and `images`); every failure (a refusal, a lensgraph error, a bug) becomes a caller-safe MCP
    tool error."""
    try:
        out = shape.model_validate(operation(*args))
        content: list[TextContent | ImageContent] = [TextContent(type="text", text=text(out))]
        content += images(out) if images else []
        return CallToolResult(content=content, structured_content=out.model_dump(mode="json"))
    except Exception as e:  # keep serving whatever failed
        raise McpToolError(tools.failure_message(e, operation.__name__)) from None


def add_search_images(server: MCPServer, tools: ImageTools) -> None:
    config = tools.config

    @server.tool(
        title="Search images",
        description=(
            "Find images in the user's indexed collection. Give a description of the wanted image "
            "(text-to-image), or a reference_image plus the change wanted, e.g. 'the same but at night' "
            "(composed retrieval; the reference itself is never returned). Returns up to k matches, "
            "best first, each with rank, id, path, score, caption and evidence, and thumbnails of the "
            f"first {THUMBNAILS} as images."
        ),
        annotations=READ_ONLY,
    )
    def search_images(
        query: Annotated[
            str,
            Field(
                description="What to look for, or how the reference image should change. Plain language.",
                json_schema_extra={"minLength": 1, "maxLength": config.max_text_chars},
                strict=True,
            ),
        ],
        reference_image: Annotated[
            str | None,
            Field(
                description=(
                    "Optional reference image: a file path inside the allowed folders (e.g. a path from an "
                    "earlier result), or a data URL 'data:image/jpeg;base64,...' of at most "
                    f"{config.max_image_bytes:,} bytes."
                ),
                strict=True,
            ),
        ] = None,
        k: Annotated[
            int,
            Field(
                description=f"How many results to return, 1 to {config.max_k}.",
                json_schema_extra={"minimum": 1, "maximum": config.max_k},
                strict=True,
            ),
            WHOLE_NUMBER,
        ] = 10,
        threshold: Annotated[
            float | None,
            Field(description="Only return results whose relevance (0-1, from verification) is at least this.",
                  json_schema_extra={"minimum": 0, "maximum": 1}, strict=True),
        ] = None,
    ) -> Annotated[CallToolResult, SearchOutput]:
        return answer(tools, SearchOutput, tools.search_images, query, reference_image, k, threshold,
                      text=_search_text, images=lambda out: thumbnails(tools, out.results[:THUMBNAILS]))


def add_describe_image(server: MCPServer, tools: ImageTools) -> None:
    config = tools.config

    @server.tool(
        title="Describe an image",
        description=(
            "Say what one image shows: its stored caption if the index has one, otherwise a new caption "
            "from the vision model (when one is configured)."
        ),
        annotations=READ_ONLY,
    )
    def describe_image(
        image: Annotated[
            str,
            Field(
                description=(
                    "The image: a file path inside the allowed folders (e.g. a search result's path), or a "
                    f"data URL 'data:image/jpeg;base64,...' of at most {config.max_image_bytes:,} bytes."
                ),
                strict=True,
            ),
        ],
    ) -> Annotated[CallToolResult, ImageDescription]:
        return answer(tools, ImageDescription, tools.describe_image, image, text=lambda out: out.caption)


def add_index_images(server: MCPServer, tools: ImageTools) -> None:
    @server.tool(
        title="Index images",
        description=(
            "Add the images under a folder (searched recursively; it must lie inside the allowed folders) "
            "to the collection so they become searchable. Incremental: already indexed images are skipped. "
            "Slow for large folders."
        ),
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
        ),
    )
    def index_images(
        folder: Annotated[str, Field(description="The folder of images, inside the allowed folders.", strict=True)],
    ) -> Annotated[CallToolResult, IndexingReport]:
        return answer(tools, IndexingReport, tools.index_images, folder, text=lambda out: (
            f"Added {out.added}, unchanged {out.unchanged}, skipped {len(out.skipped)}; "
            f"the collection now holds {out.images} images."))


def add_index_info(server: MCPServer, tools: ImageTools) -> None:
    @server.tool(
        title="Index info",
        description=(
            "What the searchable collection holds: number of images and captions, the models that embedded "
            "them, how far the search pipeline runs, and whether indexing is enabled."
        ),
        annotations=READ_ONLY,
    )
    def index_info() -> Annotated[CallToolResult, IndexSummary]:
        return answer(tools, IndexSummary, tools.index_info, text=lambda out: (
            f"Index {out.name!r}: {out.images} images, {out.captions} with captions; CLIP {out.clip}; "
            f"stages up to {out.stages}; indexing {'enabled' if out.indexing_enabled else 'disabled'}."))


def warm_up_lifespan(tools: ImageTools) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A server lifespan that starts loading the models and the index in the background (`_warm_up`),
    so the first call does not wait for all of it."""

    @asynccontextmanager
    async def lifespan(_server: Any) -> AsyncIterator[None]:
        threading.Thread(target=_warm_up, args=(tools,), name="lensgraph-warm-up", daemon=True).start()
        yield None

    return lifespan


def _search_text(out: SearchOutput) -> str:
    lines = [f"{len(out.results)} result(s) for {out.query!r}:"]
    lines += [f"{h.rank}. {h.path or h.id} (score {h.score:.3f})" + (f" - {_short(h.caption)}" if h.caption else "")
              for h in out.results]
    lines += [f"warning: {w}" for w in out.warnings]
    return "\n".join(lines)


def thumbnails(tools: ImageTools, hits: list[SearchHit], size: int = 256) -> list[ImageContent]:
    """The hits' thumbnails as MCP image content, for hosts that show images: only of files under
    the allowed folders (a hit without a public path has none); an unreadable file is skipped."""
    found = []
    for hit in hits:
        if hit.path is None:
            continue
        try:
            mime, data = tools.thumbnail(hit.id, size)
        except Exception as e:  # a moved or changed file costs its thumbnail, not the answer
            log.info("no thumbnail for result %d: %s", hit.rank, tools.public_text(str(e)))
            continue
        found.append(ImageContent(type="image", data=base64.b64encode(data).decode(), mimeType=mime))
    return found


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _warm_up(tools: ImageTools) -> None:
    """Open the index, build the models and load the encoders a query needs, before the first call."""
    try:
        ctx = tools.context  # built once; calls arriving meanwhile wait on its lock
        ctx.gallery.text_queries(["warm-up"], ctx.settings.tau)  # loads exactly the encoders this tau uses
        log.info("models and index loaded")
    except Exception as e:  # reported again, caller-safe, by the first tool call
        log.error("could not load the search pipeline: %s", redact(str(e), tools.settings))


# -- serving -----------------------------------------------------------------------------------


def quiet_output() -> None:
    """Keep stdout for the protocol: no progress bars, library chatter to stderr (through logging).
    Call before models are imported; set only what the user has not set."""
    for name, value in {
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TQDM_DISABLE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ.setdefault(name, value)
    if "huggingface_hub" in sys.modules:  # imported already: the variable was read at import
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def setup_logging(level: str = "WARNING") -> None:
    """Everything to stderr: lensgraph at `level`, other libraries at errors only, warnings included."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.ERROR, handlers=[handler], force=True)
    logging.getLogger("lensgraph").setLevel(level)
    logging.getLogger("mcp").setLevel(level)
    logging.captureWarnings(True)


def serve(
    tools: ImageTools,
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "WARNING",
) -> None:
    """Serve the tools until the client disconnects (stdio) or the process is stopped (http).
    HTTP serves streamable HTTP at http://HOST:PORT/mcp, without authentication: keep it on
    127.0.0.1 or put it behind a proxy that authenticates."""
    quiet_output()
    setup_logging(log_level)
    server = build_server(tools, warm_up=True)
    if transport == "stdio":
        server.run("stdio")
    elif transport == "http":
        from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE

        # room for a reference image as a data URL (base64 is 4/3 of the bytes) plus the JSON around it
        body_limit = max(DEFAULT_MAX_REQUEST_BODY_SIZE, tools.config.max_image_bytes * 4 // 3 + 64_000)
        log.warning("lensgraph MCP server at http://%s:%d/mcp", host, port)
        server.run("streamable-http", host=host, port=port, max_request_body_size=body_limit)
    else:
        raise LensgraphError(f"Unknown transport {transport!r}: use stdio or http.")
