"""`openai:MODEL`: OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp's server, TGI).

One class, configured by base URL; images go as base64 data URLs. Retries belong to `Model`, so
the openai client's own retries are off and its transient errors become `TransientError`.
"""

from __future__ import annotations

import base64
import logging
from typing import Any
from urllib.parse import urlparse, urlunparse

from pipeline.errors import LensgraphError
from pipeline.models import ModelError, Reply, Request, TransientError

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
        self.json_mode = True  # switched off if the server rejects response_format
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or "no-key",  # local servers ignore the key, the client insists on one
            timeout=timeout,
            max_retries=0,
            http_client=http_client,
        )

    def _messages(self, request: Request) -> list[dict[str, Any]]:
        content: Any = request.prompt
        if request.images:
            content = [
                {"type": "image_url", "image_url": {"url": f"data:{im.mime};base64,{base64.b64encode(im.data).decode()}"}}
                for im in request.images
            ] + [{"type": "text", "text": request.prompt}]
        messages = [{"role": "system", "content": request.system}] if request.system else []
        return messages + [{"role": "user", "content": content}]

    def generate(self, request: Request) -> Reply:
        import openai

        kwargs: dict[str, Any] = {
            "model": self.model_id,
            "messages": self._messages(request),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.json and self.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        try:
            response = self.client.chat.completions.create(**kwargs)
        except (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as e:
            raise TransientError(f"{type(e).__name__}: {e}") from None
        except openai.APIStatusError as e:
            if e.status_code >= 500 or e.status_code in (408, 409, 429):
                raise TransientError(f"HTTP {e.status_code}: {e.message}") from None
            if "response_format" in kwargs and e.status_code in (400, 422):
                log.warning("%s rejected JSON mode (%s); asking without it", self.identity, e.message)
                self.json_mode = False
                return self.generate(request)
            raise ModelError(f"{self.identity} refused the request: HTTP {e.status_code}: {e.message}") from None
        except openai.OpenAIError as e:
            raise ModelError(f"{self.identity}: {e}") from None
        if not response.choices:
            raise TransientError("empty reply (no choices)")
        choice = response.choices[0]
        return Reply(choice.message.content or "", choice.finish_reason or "stop")
