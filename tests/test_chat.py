"""Chat retrieval: each turn refines the description; threads persist in SQLite and resume."""

from __future__ import annotations

import json

from langgraph.checkpoint.memory import InMemorySaver

from conftest import cli_json
from fakes import ScriptedBackend
from graphs.chat import build_chat_graph, send
from graphs.context import Context
from pipeline.backends import Models
from pipeline.models import Model
from pipeline.prompts import load_prompt_set


def test_llm_refines_the_description_each_turn(coco_searcher):
    seen = []

    def script(request):
        seen.append(request.prompt)
        message = request.prompt.split("New message: ")[1].split("\n")[0]
        previous = request.prompt.split("Current description: ")[1].split("\n")[0]
        base = "" if previous == "(none yet)" else previous.rstrip(".") + ", "
        return json.dumps({"description": f"{base}{message}."})

    llm = Model("scripted", ScriptedBackend(script))
    ctx = Context(coco_searcher, Models(llm, None, None, None), load_prompt_set(), k=5, tau=1.0, stages="reason")
    chat = build_chat_graph(InMemorySaver())
    first = send(chat, ctx, "t", "a horse")
    assert first["description"] == "a horse." and len(first["candidates"]) == 5
    second = send(chat, ctx, "t", "on a beach")
    assert second["description"] == "a horse, on a beach."
    assert second["dialogue"] == ["a horse", "on a beach"]
    assert [h["message"] for h in second["history"]] == ["a horse", "on a beach"]
    assert "- a horse" in seen[1]  # the dialogue so far is in the prompt
    other = send(chat, ctx, "other-thread", "a cat")
    assert other["dialogue"] == ["a cat"]


def test_garbage_reply_appends_the_message_with_a_warning(coco_searcher):
    llm = Model("scripted", ScriptedBackend(lambda r: "sorry?"))
    ctx = Context(coco_searcher, Models(llm, None, None, None), load_prompt_set(), k=3, tau=1.0, stages="reason")
    chat = build_chat_graph(InMemorySaver())
    send(chat, ctx, "t", "a horse")
    state = send(chat, ctx, "t", "on a beach")
    assert state["description"] == "a horse, on a beach"
    assert "no description" in state["trace"][0]["warnings"][0]


def test_cli_chat_resumes_a_thread(coco_searcher):
    db = str(coco_searcher.settings.db)
    first = cli_json("chat", "--db", db, "--thread", "walk", "-m", "a horse", "-m", "on a beach", "--tau", "1", "--k", "5")
    assert [t["round"] for t in first["turns"]] == [1, 2]
    resumed = cli_json("chat", "--db", db, "--thread", "walk", "-m", "with two riders", "--tau", "1", "--k", "5")
    turn = resumed["turns"][0]
    assert turn["round"] == 3 and turn["description"] == "a horse, on a beach, with two riders"
    assert len(turn["results"]) == 5 and "beach" in turn["results"][0]["caption"].lower()
