"""The OpenAI-compatible backend, with HTTP faked at the transport (httpx.MockTransport)."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from lensgraph.pipeline.models.backends.openai_compat import OpenAIBackend, redact_url
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.models.calls import ImageInput, Model, ModelError


def completion(content: str, finish: str = "stop") -> dict:
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}]}


class Server:
    """Scripted HTTP responses; records every request body."""

    def __init__(self, *responses: tuple[int, dict]):
        self.responses = list(responses)
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        status, body = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        return httpx.Response(status, json=body)


def backend(server: Server) -> OpenAIBackend:
    return OpenAIBackend("m", base_url="http://127.0.0.1:1/v1", http_client=httpx.Client(transport=httpx.MockTransport(server)))


def test_images_go_as_data_urls_and_json_mode_is_asked(coco):
    server = Server((200, completion('{"a": 1}')))
    image = ImageInput.from_path(next((coco / "images").glob("*.jpg")))
    model = Model("openai:m", backend(server))
    reply = model.complete("Describe", [image], system="be brief", json=True, max_tokens=7)
    assert reply.text == '{"a": 1}' and reply.finish_reason == "stop"
    body = server.bodies[0]
    assert body["response_format"] == {"type": "json_object"} and body["max_tokens"] == 7
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    parts = body["messages"][1]["content"]
    url = parts[0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,") and base64.b64decode(url.split(",", 1)[1]) == image.data
    assert parts[1] == {"type": "text", "text": "Describe"}


def test_rate_limits_and_5xx_are_retried():
    server = Server((429, {"error": {"message": "slow down"}}), (503, {"error": {"message": "busy"}}), (200, completion("ok")))
    model = Model("openai:m", backend(server), retries=3, backoff=0.001)
    assert model.complete("hi").text == "ok"
    assert len(server.bodies) == 3 and model.stats.calls == 1


def test_a_server_without_json_mode_is_asked_again_without_it():
    server = Server((400, {"error": {"message": "response_format not supported"}}), (200, completion("{}")))
    b = backend(server)
    Model("openai:m", b).complete("hi", json=True)
    assert "response_format" in server.bodies[0] and "response_format" not in server.bodies[1]
    assert "json_object" not in b.formats


def test_concurrent_requests_refused_together_drop_the_form_once():
    """llama.cpp answers every concurrent json_schema request with HTTP 500: each must fall back to
    the next form (the CI fault run once failed here with 'list.remove(x): x not in list')."""
    import threading

    arrived = threading.Barrier(4, timeout=10)

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["response_format"]["type"] == "json_schema":
            arrived.wait()  # all four were refused before any dropped the form
            return httpx.Response(500, json={"error": {"message": "Input should be 'text' or 'json_object'"}})
        return httpx.Response(200, json=completion('{"a": 1}'))

    b = OpenAIBackend("m", base_url="http://127.0.0.1:1/v1", http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    model = Model("openai:m", b, retries=0)
    replies, errors = [], []

    def call(i: int) -> None:
        try:
            replies.append(model.complete(f"q{i}", schema=SCHEMA).text)
        except Exception as e:  # noqa: BLE001  (what the test is about)
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and replies == ['{"a": 1}'] * 4 and "json_schema" not in b.formats


def test_a_400_about_something_else_keeps_the_structured_form():
    server = Server((400, {"error": {"message": "This model's maximum context length is 4096 tokens"}}))
    b = backend(server)
    with pytest.raises(ModelError, match="context length"):
        Model("openai:m", b, retries=0).complete("hi", json=True)
    assert "json_object" in b.formats and len(server.bodies) == 1


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def test_schemas_go_in_the_strongest_form_the_server_takes():
    # OpenAI and vLLM: json_schema is accepted at once
    server = Server((200, completion('{"a": 1}')))
    Model("openai:m", backend(server)).complete("hi", schema=SCHEMA)
    assert server.bodies[0]["response_format"] == {"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA}}
    # llama.cpp's server: HTTP 500 for json_schema, then json_object with a schema key; remembered
    server = Server((500, {"error": {"message": "Input should be 'text' or 'json_object'"}}), (200, completion('{"a": 1}')))
    b = backend(server)
    model = Model("openai:m", b, retries=0)
    model.complete("hi", schema=SCHEMA)
    model.complete("again", schema=SCHEMA)
    assert [body["response_format"]["type"] for body in server.bodies] == ["json_schema", "json_object", "json_object"]
    assert server.bodies[1]["response_format"]["schema"] == SCHEMA and b.formats[0] == "json_object_schema"
    # a real outage during plain JSON mode is retried, not mistaken for a missing feature
    server = Server((500, {"error": {"message": "boom"}}), (200, completion("{}")))
    b = backend(server)
    Model("openai:m", b, retries=2, backoff=0.001).complete("hi", json=True)
    assert "json_object" in b.formats and len(server.bodies) == 2


def test_logprobs_are_asked_for_and_read():
    body = completion("Yes")
    body["choices"][0]["logprobs"] = {"content": [{"token": "Yes", "logprob": -0.2, "bytes": None, "top_logprobs": [
        {"token": "Yes", "logprob": -0.2, "bytes": None}, {"token": "No", "logprob": -1.8, "bytes": None}]}]}
    server = Server((200, body))
    reply = Model("openai:m", backend(server)).complete("Is there a dog?", max_tokens=2, logprobs=True)
    assert server.bodies[0]["logprobs"] is True and server.bodies[0]["top_logprobs"] == 10
    assert reply.logprobs == ({"Yes": -0.2, "No": -1.8},)
    plain = Server((200, completion("Yes")))
    assert Model("openai:m", backend(plain)).complete("hi").logprobs is None and "logprobs" not in plain.bodies[0]


def test_other_client_errors_are_final():
    server = Server((401, {"error": {"message": "bad key"}}))
    model = Model("openai:m", backend(server), retries=3, backoff=0.001)
    with pytest.raises(ModelError, match="HTTP 401"):
        model.complete("hi")
    assert len(server.bodies) == 1


def test_length_cut_is_reported():
    server = Server((200, completion('{"a": ', "length")))
    assert Model("openai:m", backend(server)).complete("hi").finish_reason == "length"


def test_no_key_and_no_server_is_a_clear_error(monkeypatch):
    with pytest.raises(LensgraphError, match="needs OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o-mini")


def test_credentials_never_reach_identity_or_logs():
    b = OpenAIBackend("m", base_url="https://user:secret@example.com:8443/v1/", api_key="sk-secret")
    assert "secret" not in b.identity and b.identity == "openai|https://example.com:8443/v1|m"
    assert redact_url("http://u:p@h/v1?token=x") == "http://h/v1"
