"""The OpenAPI document (/openapi.json): FastAPI's, completed with what its declarations cannot say.

- `stages` lists the stages this server runs (known once its models are loaded, so at the first
  request for the document, not when the routes are declared);
- the search's rules across fields (a text or a reference, one reference at most) are stated on the
  form, and on the GET's query parameters as one exploded object (OpenAPI relates no two separate
  parameters; the query string is the same: ?text=...&k=...);
- an upload is an image (`encoding`);
- a form field or query parameter is never null: leaving it out is how it says none;
- invalid input is a 400 with the JSON error every refusal has (FastAPI would document a 422 with
  its own shape).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from lensgraph.adapters.tools import ImageTools
from lensgraph.adapters.web.inputs import IMAGE_TYPES, QUERY_REFERENCES, SEARCH_REFERENCES, search_rules
from lensgraph.adapters.web.operations import stages_available
from lensgraph.pipeline.settings import STAGES

log = logging.getLogger("lensgraph.web")

FORM = "multipart/form-data"
SEARCH_FORMS = (("/api/search", "post"), ("/api/search/stream", "post"))
SEARCH_QUERY = ("/api/search/stream", "get")


def no_null(field: dict[str, Any]) -> dict[str, Any]:
    """An optional field's `anyOf: [X, {"type": "null"}]` as X, its other keys (description...) kept."""
    branches = [b for b in field.get("anyOf", ()) if b != {"type": "null"}]
    if "anyOf" not in field or len(branches) != 1:
        return field
    return {**branches[0], **{k: v for k, v in field.items() if k != "anyOf"}}


def complete(schema: dict[str, Any], stages: tuple[str, ...]) -> dict[str, Any]:
    """FastAPI's document with the additions above (changed in place, and returned)."""
    components = schema.get("components", {}).get("schemas", {})
    for path, method in SEARCH_FORMS:
        content = schema["paths"][path][method]["requestBody"]["content"][FORM]
        body = components[content["schema"]["$ref"].rsplit("/", 1)[-1]]
        body["properties"] = {name: no_null(field) for name, field in body["properties"].items()}
        body["properties"]["stages"]["enum"] = list(stages)
        body.update(search_rules(SEARCH_REFERENCES))
        content["encoding"] = {"reference": {"contentType": IMAGE_TYPES}}
    path, method = SEARCH_QUERY
    operation = schema["paths"][path][method]
    properties = {p["name"]: {**no_null(p["schema"]), "description": p.get("description", "")} for p in operation["parameters"]}
    properties["stages"]["enum"] = list(stages)
    operation["parameters"] = [{
        "name": "search", "in": "query", "style": "form", "explode": True, "required": True,
        "description": "The search's parameters, each its own query parameter (?text=...&k=...).",
        "schema": {"type": "object", "properties": properties, **search_rules(QUERY_REFERENCES)},
    }]
    for operations in schema["paths"].values():
        for operation in operations.values():
            operation["responses"].pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


def document(app: FastAPI, tools: ImageTools) -> Callable[[], dict[str, Any]]:
    """`app.openapi`: the completed document, made once (FastAPI's own caching). Until the index and
    models can be opened, `stages` lists every stage name, and the document is made again next time."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        try:
            stages, final = stages_available(tools), True
        except Exception as e:  # no index yet, say; the request that needs it reports why
            log.warning("the OpenAPI document lists every stage: %s", type(e).__name__)
            stages, final = STAGES, False
        schema = complete(get_openapi(title=app.title, version=app.version, description=app.description,
                                      routes=app.routes), stages)
        if final:
            app.openapi_schema = schema
        return schema

    return openapi
