"""lensgraph as an agent tool: the Python API, a LangChain tool in a LangGraph agent loop, OpenAI
function calling, and the safety checks of adapters/tools.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import SecretStr

from lensgraph.adapters.agent import SearchImagesArgs, execute_tool_call, langchain_tool, openai_tool_schema
from lensgraph.adapters.searcher import Searcher
from lensgraph.adapters.tools import ImageTools, ToolConfig, ToolError, redact


@pytest.fixture(scope="module")
def tools(coco_searcher, coco):
    settings = coco_searcher.settings.model_copy(update={"tau": 1.0})
    return ImageTools(settings, ToolConfig(roots=(coco / "images",), max_k=20, max_text_chars=200, max_image_bytes=400_000))


PHOTO = "000000000790.jpg"


def search_call(query: str | None, k: int = 3, reference_image: str | None = None) -> dict:
    arguments = json.dumps({"query": query, "reference_image": reference_image, "k": k, "threshold": None})
    return {"id": "call_1", "type": "function", "function": {"name": "search_images", "arguments": arguments}}


def tool_call(args: dict) -> dict:
    return {"name": "search_images", "args": args, "id": "c1", "type": "tool_call"}


def test_python_api_search_chat_and_async(coco_searcher, coco):
    searcher = Searcher.open(db=coco_searcher.settings.db, index=coco_searcher.settings.index, tau=1.0)
    results = searcher.search("two horses on a beach", k=5)
    assert len(results) == 5 and [r.rank for r in results] == [1, 2, 3, 4, 5]
    assert "horse" in (results[0].caption or "").lower()
    assert [s["stage"] for s in results.stages] == ["caption", "retrieve"]
    ref = coco / "images" / "000000000790.jpg"
    composed = searcher.search("with a dog", ref=ref, k=3)
    assert composed.explanation["reference_id"] not in [r.id for r in composed]
    with pytest.raises(Exception, match="needs models"):
        searcher.search("x", stages="verify")
    thread = searcher.chat("api-thread")
    thread.send("a horse")
    second = thread.send("on a beach", k=3)
    assert second.explanation["description"] == "a horse, on a beach" and len(second) == 3
    again = asyncio.run(searcher.asearch("two horses on a beach", k=5))
    assert [r.id for r in again] == [r.id for r in results]


class ScriptedChatModel(GenericFakeChatModel):
    """A chat model that replays scripted messages (tool calls, then an answer) and accepts tools."""

    def bind_tools(self, tools, **kwargs):
        return self


def test_langchain_tool_in_a_langgraph_agent_loop(tools):
    tool = langchain_tool(tools)
    assert tool.args_schema is SearchImagesArgs and tool.response_format == "content_and_artifact"
    script = [
        AIMessage(content="", tool_calls=[{"name": "search_images", "args": {"query": "people eating cake", "k": 3}, "id": "c1"}]),
        AIMessage(content="", tool_calls=[{"name": "search_images", "args": {"query": "x", "k": 999}, "id": "c2"}]),
        AIMessage(content="Found them."),
    ]
    model = ScriptedChatModel(messages=iter(script))

    def agent(state: MessagesState) -> dict:
        return {"messages": [model.bind_tools([tool]).invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([tool], handle_tool_errors=True))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    final = builder.compile().invoke({"messages": [HumanMessage("find people eating cake")]})
    tool_messages = [m for m in final["messages"] if isinstance(m, ToolMessage)]
    assert final["messages"][-1].content == "Found them." and len(tool_messages) == 2
    ok = tool_messages[0]
    assert ok.artifact["results"][0]["rank"] == 1 and len(ok.artifact["results"]) == 3
    assert "1. " in ok.content and ok.artifact["results"][0]["path"] in ok.content
    assert ok.status == "success" and tool_messages[1].status == "error"  # k=999: refused by the schema


def test_prebuilt_react_agent_uses_the_tool(tools):
    from langgraph.prebuilt import create_react_agent

    script = [
        AIMessage(content="", tool_calls=[{"name": "search_images", "args": {"query": "a horse on a beach", "k": 2}, "id": "c1"}]),
        AIMessage(content="Here they are."),
    ]
    agent = create_react_agent(ScriptedChatModel(messages=iter(script)), [langchain_tool(tools)])
    final = agent.invoke({"messages": [HumanMessage("horse on a beach?")]})
    tool_message = next(m for m in final["messages"] if isinstance(m, ToolMessage))
    assert len(tool_message.artifact["results"]) == 2 and final["messages"][-1].content == "Here they are."


def test_langchain_refusals_and_failures_are_error_tool_messages(tools, coco):
    """An agent branches on ToolMessage.status: a refusal by ImageTools comes back as status="error"
    with the ToolError's message as content (its wording is tested in test_refusals), as do bad
    arguments; a search is "success"."""
    tool = langchain_tool(tools)
    outside = str(next((coco / "extra").glob("*.jpg")))
    for args in ({"query": "x", "reference_image": outside},  # outside the roots
                 {"query": "x", "k": 30}):  # within the schema's 50, over this tool's max_k of 20
        with pytest.raises(ToolError) as refused:
            tools.search_images(**args)
        for message in (tool.invoke(tool_call(args)), asyncio.run(tool.ainvoke(tool_call(args)))):
            assert (message.status, message.content) == ("error", str(refused.value))
        assert tool.invoke(args) == str(refused.value)  # no ToolCall: the message, not an exception
    invalid = tool.invoke(tool_call({"query": "x", "k": 999}))
    assert invalid.status == "error" and invalid.content.startswith("Invalid arguments")
    ok = tool.invoke(tool_call({"query": "a horse", "k": 2}))
    assert ok.status == "success" and len(ok.artifact["results"]) == 2


STRICT_KEYWORDS = {
    # what OpenAI's strict mode accepts (platform.openai.com/docs/guides/structured-outputs, "Supported
    # schemas"); anything else is refused with a 400 ("'default' is not permitted", for one)
    "type", "description", "title", "properties", "required", "additionalProperties", "items", "enum", "const",
    "anyOf", "$ref", "$defs", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minItems", "maxItems",
}


def strict_mode_problems(schema: dict, where: str = "parameters") -> list[str]:
    """What OpenAI's strict mode would refuse in a JSON schema, at every level."""
    problems = [f"{where}: {key!r} is not supported" for key in set(schema) - STRICT_KEYWORDS]
    if "object" in (schema.get("type") if isinstance(schema.get("type"), list) else [schema.get("type")]):
        if schema.get("additionalProperties") is not False:
            problems.append(f"{where}: additionalProperties must be false")
        if set(schema.get("required", [])) != set(schema.get("properties", {})):
            problems.append(f"{where}: every property must be required")
    children = [(f"{where}.{name}", sub) for name, sub in schema.get("properties", {}).items()]
    children += [(f"{where}.items", schema["items"])] if isinstance(schema.get("items"), dict) else []
    children += [(f"{where}.anyOf[{i}]", sub) for i, sub in enumerate(schema.get("anyOf", []))]
    children += [(f"{where}.$defs.{name}", sub) for name, sub in schema.get("$defs", {}).items()]
    return problems + [p for path, sub in children for p in strict_mode_problems(sub, path)]


def test_openai_schema_is_valid_in_strict_mode():
    import jsonschema
    from openai.lib._pydantic import _ensure_strict_json_schema  # what the SDK applies for strict tools
    from openai.types.chat import ChatCompletionFunctionToolParam
    from pydantic import TypeAdapter

    schema = openai_tool_schema()
    TypeAdapter(ChatCompletionFunctionToolParam).validate_python(schema)  # the shape the SDK sends
    assert schema["function"]["strict"] is True
    params = schema["function"]["parameters"]
    jsonschema.Draft202012Validator.check_schema(params)  # a valid JSON Schema (the metaschema)
    assert strict_mode_problems(params) == []
    copy = json.loads(json.dumps(params))
    assert _ensure_strict_json_schema(copy, path=(), root=copy) == params  # the SDK's strict rules change nothing
    # the same arguments as the LangChain tool; the optional ones (a default there) nullable here
    assert list(params["properties"]) == list(SearchImagesArgs.model_fields)
    for name, field in SearchImagesArgs.model_fields.items():
        assert ("null" in params["properties"][name]["type"]) == (not field.is_required()), name
    jsonschema.validate({"query": "a cat", "reference_image": None, "k": None, "threshold": None}, params)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"query": "a cat", "reference_image": None, "k": 3, "threshold": None, "extra": 1}, params)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"query": "a cat", "k": 3}, params)  # strict: every property present


def test_an_openai_tool_call_runs_with_the_nulls_strict_mode_sends(tools):
    for arguments, count in [
        ({"query": "a kitchen", "reference_image": None, "k": None, "threshold": None}, 5),  # null: the default
        ({"query": "with a dog", "reference_image": PHOTO, "k": 3, "threshold": None}, 3),
        ({"query": "a kitchen", "k": 4}, 4),  # a client not in strict mode may leave optional ones out
    ]:
        call = {"id": "call_1", "type": "function", "function": {"name": "search_images", "arguments": json.dumps(arguments)}}
        message = execute_tool_call(tools, call)
        body = json.loads(message["content"])
        assert message["role"] == "tool" and message["tool_call_id"] == "call_1", body
        assert len(body["results"]) == count, (arguments, body)
    null_query = execute_tool_call(tools, search_call(None))  # a null where no default exists is still refused
    assert "Invalid arguments" in json.loads(null_query["content"])["error"]
    bad = execute_tool_call(tools, {"id": "c", "function": {"name": "search_images", "arguments": "{not json"}})
    assert "not valid JSON" in json.loads(bad["content"])["error"]


def test_refusals(tools, coco, tmp_path):
    with pytest.raises(ToolError, match="outside"):
        tools.search_images("x", str(coco / "images" / ".." / "extra" / next(os.listdir(coco / "extra").__iter__())))
    link = coco / "images" / ".." / "images"  # resolves inside: allowed
    assert tools.allowed_path(link / "000000000790.jpg")
    escape = tmp_path / "escape.jpg"
    escape.symlink_to(next((coco / "extra").glob("*.jpg")))
    confined = ImageTools(tools.settings, ToolConfig(roots=(tmp_path,)))
    with pytest.raises(ToolError, match="outside"):
        confined.allowed_path(escape)
    with pytest.raises(ToolError, match="No such"):
        tools.search_images("x", str(coco / "images" / "nope.jpg"))
    with pytest.raises(ToolError, match="k must be"):
        tools.search_images("x", k=0)
    with pytest.raises(ToolError, match="limit is 200"):
        tools.search_images("x" * 201)
    big = "data:image/jpeg;base64," + base64.b64encode(b"\xff" * 500_000).decode()
    with pytest.raises(ToolError, match="larger than"):
        tools.search_images("x", big)
    with pytest.raises(ToolError, match="not valid base64"):
        tools.search_images("x", "data:image/png;base64,***")
    with pytest.raises(ToolError, match="Indexing is disabled"):
        tools.index_images(str(coco / "images"))


def test_reference_as_data_url_is_excluded_like_a_path(tools, coco):
    ref = coco / "images" / "000000000790.jpg"
    url = "data:image/jpeg;base64," + base64.b64encode(ref.read_bytes()).decode()
    by_url = tools.search_images("with a dog", url, k=5)
    by_path = tools.search_images("with a dog", str(ref), k=5)
    assert [r["id"] for r in by_url["results"]] == [r["id"] for r in by_path["results"]]


def test_redact_removes_secrets(coco_searcher):
    settings = coco_searcher.settings.model_copy(update={"openai_api_key": "sk-test-SECRET123456"})
    from pydantic import SecretStr

    settings = settings.model_copy(update={"openai_api_key": SecretStr("plain-secret-value")})
    text = "failed http://user:pass@host:1/v1 with key plain-secret-value and sk-abcdefghijklmnop, Bearer abc"
    clean = redact(text, settings)
    assert "pass@" not in clean and "plain-secret-value" not in clean and "sk-abcdefghijklmnop" not in clean
    assert "abc" not in clean.split("Bearer")[1]


def test_results_name_images_relative_to_their_root(tools, coco, tmp_path):
    inside = json.loads(execute_tool_call(tools, search_call("two horses on a beach"))["content"])["results"]
    assert all(r["path"] and not Path(r["path"]).is_absolute() for r in inside)
    assert tools.describe_image(inside[0]["path"])["id"] == inside[0]["id"]  # the relative name leads back
    again = tools.search_images("with a dog", inside[0]["path"], k=3)["results"]
    assert inside[0]["id"] not in [r["id"] for r in again]

    elsewhere = ImageTools(tools.settings, ToolConfig(roots=(tmp_path,)))  # the photos lie outside this root
    message = execute_tool_call(elsewhere, search_call("two horses on a beach"))
    by_langchain = langchain_tool(elsewhere).invoke(tool_call({"query": "two horses on a beach", "k": 3}))
    assert all(r["path"] is None for r in json.loads(message["content"])["results"])
    assert all(r["path"] is None for r in by_langchain.artifact["results"])
    for shown in (message["content"], by_langchain.content, json.dumps(by_langchain.artifact)):
        assert str(coco) not in shown and str(tmp_path) not in shown
    assert by_langchain.artifact["results"][0]["id"] in by_langchain.content  # named by id instead


def test_paths_in_messages_are_shortened(tools, coco):
    text = (f"verify: 1/3 calls failed ({coco}/extra/x.jpg: unreadable); see {coco}/images/{PHOTO}; "
            "POST http://host:8000/v1/chat/completions and /v1/chat/completions")
    shown = tools.public_text(text)
    assert str(coco) not in shown and "(x.jpg: unreadable)" in shown and f"see {PHOTO};" in shown
    assert "http://host:8000/v1/chat/completions and /v1/chat/completions" in shown  # routes, not files


@pytest.mark.parametrize("swap", ["file", "folder"])
def test_a_path_swapped_after_the_check_is_refused_not_read(tools, coco, tmp_path, monkeypatch, swap):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(coco / "images" / PHOTO, root / "sub" / "a.jpg")
    secret = next((coco / "extra").glob("*.jpg"))
    shutil.copy(secret, outside / "a.jpg")
    confined = ImageTools(tools.settings, ToolConfig(roots=(root,)))
    checked = confined.allowed_path

    def check_then_swap(path):
        real = checked(path)
        if swap == "file":  # the file becomes a link out of the root
            (root / "sub" / "a.jpg").unlink()
            (root / "sub" / "a.jpg").symlink_to(outside / "a.jpg")
        else:  # a folder on the way becomes a link out of the root
            (root / "sub").rename(root / "sub.old")
            (root / "sub").symlink_to(outside, target_is_directory=True)
        return real

    monkeypatch.setattr(confined, "allowed_path", check_then_swap)
    with pytest.raises(ToolError, match="outside|changed|readable"):  # the old code read the outside file
        confined.image_bytes(str(root / "sub" / "a.jpg"))


def test_the_graph_gets_the_checked_bytes_not_the_callers_path(tools, coco, monkeypatch):
    import lensgraph.adapters.tools

    ref = coco / "images" / PHOTO
    seen = {}

    def run_query(ctx, query, reference=None, subset=()):
        seen["reference"], seen["bytes"] = reference, Path(reference).read_bytes()
        return {"candidates": [], "trace": []}

    monkeypatch.setattr(lensgraph.adapters.tools, "run_query", run_query)
    assert tools.search_images("with a dog", str(ref), k=3)["results"] == []
    assert seen["reference"] != str(ref) and seen["bytes"] == ref.read_bytes()


def test_an_unexpected_failure_is_a_redacted_error_in_each_adapter(tools, monkeypatch, caplog):
    monkeypatch.setattr(tools, "settings", tools.settings.model_copy(update={"openai_api_key": SecretStr("plainsecretvalue42")}))

    failure = RuntimeError("boom sk-abc123 via http://user:p@ss@host/v1 with plainsecretvalue42")

    def boom(*args, **kwargs):
        raise failure

    monkeypatch.setattr(tools.searcher, "results_of", boom)
    expected = tools.failure_message(failure)  # the wording, checked once here, at ImageTools
    assert expected.startswith("Internal error (RuntimeError: boom") and "try again" in expected
    by_langchain = langchain_tool(tools).invoke(tool_call({"query": "a dog", "k": 2}))
    by_openai = json.loads(execute_tool_call(tools, search_call("a dog"))["content"])
    assert (by_langchain.status, by_langchain.content) == ("error", expected)  # each adapter says just that
    assert by_openai == {"error": expected}
    for shown in (by_langchain.content, by_openai["error"], caplog.text):
        for leak in ("sk-abc123", "p@ss", "ss@host", "plainsecretvalue42"):
            assert leak not in shown, shown
    assert "Traceback" not in by_langchain.content + by_openai["error"] and "Traceback" in caplog.text

    malformed = execute_tool_call(tools, object())  # not a tool call at all: still a message, not an exception
    assert malformed["role"] == "tool" and "Internal error (AttributeError" in json.loads(malformed["content"])["error"]
    invalid = langchain_tool(tools).invoke(tool_call({"query": "a dog", "k": 999, "reference_image": "sk-abc123456"}))
    assert invalid.status == "error" and invalid.content.startswith("Invalid arguments")
    assert "sk-abc123456" not in invalid.content
