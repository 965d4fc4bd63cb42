"""`openai:MODEL`: OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp's server, TGI).

One class, configured by base URL; images go as base64 data URLs. Retries belong to `Model`, so
the openai client's own retries are off and its transient errors become `TransientError`.

Structured output is asked for in the strongest form the server takes, learnt from its first
refusal and kept for the backend's life: OpenAI's and vLLM's `json_schema`, then llama.cpp's
`json_object` with a `schema` key (its server answers `json_schema` with HTTP 500), then plain JSON
mode, then nothing (the reply is parsed tolerantly whatever happens).
"""

from __future__ import annotations

import base64
import logging
import threading
from typing import Any
from urllib.parse import urlparse, urlunparse

from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.models.calls import IMAGE_MAX_SIDE, LOGPROB_POSITIONS, ModelError, Reply, Request, TransientError, Usage

log = logging.getLogger("lensgraph")


def redact_url(url: str | None) -> str:
    """A base URL without credentials, for logs, cache keys and manifests."""
    if not url:
        return "https://api.openai.com/v1"
    parts = urlparse(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunparse((parts.scheme, netloc, parts.path.rstrip("/"), "", "", ""))


STRUCTURED_FORMATS = ("json_schema", "json_object_schema", "json_object")


def retry_after(response: Any) -> float | None:
    """The seconds a Retry-After header asks for (a number; an HTTP date is read as 'soon')."""
    value = getattr(response, "headers", {}).get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0


def _alternatives(choice: Any) -> tuple[dict[str, float], ...] | None:
    """The top alternatives at the first generated positions, from a chat completion's logprobs."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    positions = []
    for token in content[:LOGPROB_POSITIONS]:
        alternatives = {alt.token: float(alt.logprob) for alt in (token.top_logprobs or [])}
        alternatives.setdefault(token.token, float(token.logprob))  # the chosen token, if not listed
        positions.append(alternatives)
    return tuple(positions)


class OpenAIBackend:
    kind = "openai"
    cacheable = True

    def __init__(
        self,
        model_id: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_concurrency: int = 4,
        http_client: Any = None,
        image_max_side: int = IMAGE_MAX_SIDE,
    ):
        import openai

        if not model_id:
            raise LensgraphError("openai: needs a model name, e.g. openai:gpt-4o-mini.")
        if not api_key and not base_url:
            raise LensgraphError(
                f"openai:{model_id} needs OPENAI_API_KEY, or a base URL for a local OpenAI-compatible "
                "server (--llm-base-url / --vlm-base-url or OPENAI_BASE_URL)."
            )
        self.model_id = model_id
        self.base_url = base_url
        self.max_concurrency = max_concurrency
        self.identity = f"openai|{redact_url(base_url)}|{model_id}"
        self.formats = list(STRUCTURED_FORMATS)  # the first one is used; a refused one is dropped
        self._formats_lock = threading.Lock()  # concurrent requests are refused together: drop it once
        self.image_max_side = image_max_side  # images are fitted to this before they are sent
        self._served: list[str] | None = None
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or "no-key",  # local servers ignore the key, the client insists on one
            timeout=timeout,
            max_retries=0,
            http_client=http_client,
        )

    def served(self) -> list[str] | None:
        """The model ids the server says it serves (`GET /models`): llama.cpp and vLLM ignore the
        requested name, so this is what tells two setups behind the same URL apart. None if unknown."""
        if self._served is None:
            import openai

            try:
                self._served = sorted(m.id for m in self.client.models.list())
            except (openai.OpenAIError, OSError) as e:
                log.warning("%s: could not list the served models (%s)", self.identity, e)
                self._served = []
        return self._served or None

    def _messages(self, request: Request) -> list[dict[str, Any]]:
        content: Any = request.prompt
        if request.images:
            # Fitted to image_max_side and labelled with their real format: servers refuse or misread
            # a BMP sent as image/jpeg, and full resolution only costs tokens.
            urls = []
            for im in request.images:
                mime, data = im.for_model(self.image_max_side)
                urls.append(f"data:{mime};base64,{base64.b64encode(data).decode()}")
            content = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
            content.append({"type": "text", "text": request.prompt})
        messages = [{"role": "system", "content": request.system}] if request.system else []
        return messages + [{"role": "user", "content": content}]

    def _response_format(self, request: Request) -> tuple[str | None, dict[str, Any] | None]:
        """The structured-output form to try for this request, and its `response_format`."""
        if not request.json:
            return None, None
        for form in self.formats:
            if form == "json_schema" and request.schema is not None:
                return form, {"type": "json_schema", "json_schema": {"name": "reply", "schema": request.schema}}
            if form == "json_object_schema" and request.schema is not None:
                return form, {"type": "json_object", "schema": request.schema}
            if form == "json_object":
                return form, {"type": "json_object"}
        return None, None

    def _drop_format(self, form: str, error: Any) -> None:
        """Stop asking for a structured-output form the server refused (once, whichever request saw it first)."""
        with self._formats_lock:
            if form in self.formats:
                log.warning("%s refused response_format %s (HTTP %s: %s); trying a weaker form",
                            self.identity, form, error.status_code, error.message)
                self.formats.remove(form)

    def generate(self, request: Request) -> Reply:
        import openai

        kwargs: dict[str, Any] = {
            "model": self.model_id,
            "messages": self._messages(request),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        form, response_format = self._response_format(request)
        if response_format is not None:
            kwargs["response_format"] = response_format
        if request.logprobs:
            kwargs.update(logprobs=True, top_logprobs=10)
        try:
            response = self.client.chat.completions.create(**kwargs)
        except openai.APIStatusError as e:
            # A server that cannot do this form of structured output says so with a 400/422 about it, or
            # (llama.cpp with json_schema) a 500: try the next weaker form before treating it as an
            # outage. A 400 about something else (a prompt too long) must not cost every later request its form.
            about_format = any(w in str(e.message).lower() for w in ("response_format", "json", "schema", "grammar"))
            refused = (e.status_code in (400, 422) and about_format) or (e.status_code == 500 and form == "json_schema")
            if form is not None and refused:
                self._drop_format(form, e)
                return self.generate(request)
            if e.status_code >= 500 or e.status_code in (408, 409, 429):
                raise TransientError(f"HTTP {e.status_code}: {e.message}", retry_after(e.response)) from None
            raise ModelError(f"{self.identity} refused the request: HTTP {e.status_code}: {e.message}") from None
        except (openai.APITimeoutError, openai.APIConnectionError) as e:
            raise TransientError(f"{type(e).__name__}: {e}") from None
        except openai.OpenAIError as e:
            raise ModelError(f"{self.identity}: {e}") from None
        if not response.choices:
            raise TransientError("empty reply (no choices)")
        choice = response.choices[0]
        return Reply(choice.message.content or "", choice.finish_reason or "stop", logprobs=_alternatives(choice),
                     usage=_usage(response))


def _usage(response: Any) -> Usage | None:
    usage = getattr(response, "usage", None)
    if usage is None:
        return None
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return Usage(int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0), None if cached is None else int(cached))
