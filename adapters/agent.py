"""Adapters that put `ImageTools` in agent frameworks: a LangChain tool (usable in a LangGraph
ToolNode / ReAct agent) and OpenAI function calling (a strict JSON schema and an executor).

Neither lets an exception out: bad arguments, refusals and failures alike come back as an error
result whose message is redacted (`ImageTools.failure_message`): a ToolMessage with status="error"
in LangChain, {"error": ...} in OpenAI's tool message. Both entry points put the redacting filter
on the log handlers (`lensgraph.pipeline.redaction.install_log_redaction`)."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.tools import StructuredTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lensgraph.adapters.tools import ImageTools
from lensgraph.pipeline.redaction import install_log_redaction, redact

SEARCH_DESCRIPTION = (
    "Search the user's photo collection. Give a description of the wanted image, or a reference "
    "image plus how the wanted image differs from it (\"the same but at night\"). Returns the best "
    "matching images, best first, with captions and file paths relative to the allowed folders."
)


class SearchImagesArgs(BaseModel):
    """Arguments of search_images (also the OpenAI function's parameters)."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="What the wanted image shows, or how it differs from the reference image.")
    reference_image: str | None = Field(
        default=None,
        description="Optional reference image: a file path inside the allowed folders (as results give it, relative "
        "to one, or absolute), or a data:image/...;base64 URL.",
    )
    k: int = Field(default=5, ge=1, le=50, description="How many images to return (1-50).")
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="Only return images whose verification evidence (relevance, 0-1) is at least this.",
    )


def summary_text(result: dict[str, Any]) -> str:
    """The short answer a calling model reads; the full result travels as the artifact."""
    if not result["results"]:
        return "No matching images."
    lines = [f"{r['rank']}. {r['path'] or r['id']} (score {r['score']:.3f}"
             + ("" if r.get("relevance") is None else f", relevance {r['relevance']:.2f}") + ")"
             + (f": {r['caption'][:120]}" if r.get("caption") else "")
             for r in result["results"]]
    if result.get("warnings"):
        lines.append("Warnings: " + "; ".join(result["warnings"]))
    return "\n".join(lines)


def langchain_tool(tools: ImageTools) -> StructuredTool:
    """A LangChain StructuredTool returning (short text, full results) as content and artifact.
    Invoked with a ToolCall, a refusal, a failure and arguments the schema refuses all come back as
    a ToolMessage with status="error" and the redacted message as content (no artifact), so an
    agent can branch on the status; without one, as the message itself."""
    install_log_redaction(tools.settings)

    def search_images(query: str, reference_image: str | None = None, k: int = 5,
                      threshold: float | None = None) -> tuple[str, dict[str, Any]]:
        try:
            result = tools.search_images(query, reference_image, k, threshold)
        except Exception as e:  # a refusal or a bug alike: LangChain's error path, never a traceback
            raise ToolException(tools.failure_message(e, "search_images")) from None
        return summary_text(result), result

    def invalid_arguments(error: Exception) -> str:  # pydantic echoes the input: redact it too
        return redact(f"Invalid arguments: {error}", tools.settings)

    return StructuredTool.from_function(
        func=search_images,
        name="search_images",
        description=SEARCH_DESCRIPTION,
        args_schema=SearchImagesArgs,
        response_format="content_and_artifact",
        handle_tool_error=True,  # the ToolException's message becomes the content, status="error"
        handle_validation_error=invalid_arguments,  # likewise status="error"
    )


def openai_tool_schema() -> dict[str, Any]:
    """The search tool for OpenAI function calling, valid in strict mode (every property
    required, optional ones nullable, no additional properties)."""
    return {
        "type": "function",
        "function": {
            "name": "search_images",
            "description": SEARCH_DESCRIPTION,
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": SearchImagesArgs.model_fields["query"].description},
                    "reference_image": {
                        "type": ["string", "null"],
                        "description": SearchImagesArgs.model_fields["reference_image"].description,
                    },
                    "k": {"type": ["integer", "null"], "description": "How many images to return (1-50); null for 5."},
                    "threshold": {"type": ["number", "null"],
                                  "description": SearchImagesArgs.model_fields["threshold"].description + " null for none."},
                },
                "required": ["query", "reference_image", "k", "threshold"],
                "additionalProperties": False,
            },
        },
    }


def execute_tool_call(tools: ImageTools, tool_call: Any) -> dict[str, Any]:
    """Run one OpenAI `tool_call` (object or dict) and return the `role: tool` message to send back.
    Bad arguments, refusals and failures come back as an error message for the model, never an exception."""
    install_log_redaction(tools.settings)
    call_id: Any = None
    content: dict[str, Any]
    try:
        call = tool_call if isinstance(tool_call, dict) else tool_call.model_dump()
        call_id = call.get("id")
        content = _run_search(tools, call.get("function") or {})
    except Exception as e:  # a malformed tool_call object, or a bug
        content = {"error": tools.failure_message(e, "execute_tool_call")}
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(content, ensure_ascii=False)}


def _run_search(tools: ImageTools, function: dict[str, Any]) -> dict[str, Any]:
    """The search result for one OpenAI function call, or {"error": message}."""
    if function.get("name") != "search_images":
        return {"error": redact(f"Unknown tool {function.get('name')!r}; the only tool is search_images.", tools.settings)}
    try:
        raw = json.loads(function.get("arguments") or "{}")
    except (json.JSONDecodeError, TypeError):
        return {"error": "The arguments are not valid JSON; send a JSON object of the function's parameters."}
    if isinstance(raw, dict):  # strict mode sends every argument, null for "the default"
        raw = {name: value for name, value in raw.items() if value is not None}
    try:
        args = SearchImagesArgs.model_validate(raw)
    except ValidationError as e:  # pydantic echoes the input: redact it too
        return {"error": redact(f"Invalid arguments: {e}", tools.settings)}
    try:
        return tools.search_images(args.query, args.reference_image, args.k, args.threshold)
    except Exception as e:  # a refusal or a bug alike: a message for the model, never a traceback
        return {"error": tools.failure_message(e, "search_images")}
