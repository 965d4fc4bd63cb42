"""Chat retrieval: each turn refines the description and searches it with the search stages;
threads persist in SQLite and resume."""

from __future__ import annotations

import json

import pytest

from langgraph.checkpoint.memory import InMemorySaver

from conftest import cli_json
from fakes import ScriptedBackend, context
from lensgraph.graphs.chat import build_chat_graph, send
from lensgraph.pipeline.models.backends import Models
from lensgraph.pipeline.reasoning.evidence import CaptionMatcher
from lensgraph.pipeline.models.calls import Model
from lensgraph.pipeline.models.prompts import load_prompt_set


def plan_for(description: str) -> str:
    """A plan of the default prompt set for a text-to-image request: find its one noun, ask for it."""
    noun = "horse" if "horse" in description else "cat"
    return json.dumps({"edits": [{"type": "addition", "text": noun}],
                       "descriptions": {"core": noun, "attributes": description, "full": description},
                       "questions": [{"question": f"Is there a {noun}?", "expected": "yes"}]})


def test_llm_refines_the_description_each_turn(coco_searcher):
    seen = []

    def script(request):
        if "New message: " not in request.prompt:  # the search's planning call
            return plan_for(request.prompt)
        seen.append(request.prompt)
        message = request.prompt.split("New message: ")[1].split("\n")[0]
        previous = request.prompt.split("Current description: ")[1].split("\n")[0]
        base = "" if previous == "(none yet)" else previous.rstrip(".") + ", "
        return json.dumps({"description": f"{base}{message}."})

    llm = Model("scripted", ScriptedBackend(script))
    ctx = context(coco_searcher, Models(llm, None, None, None), load_prompt_set(), k=5, tau=1.0, stages="reason")
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


def _garbage(request):
    return "sorry?"  # the plan falls back too


def _broken(request):
    raise KeyError("choices")  # a backend's own bug, not one of our errors


@pytest.mark.parametrize("script, warning", [(_garbage, "no description"), (_broken, "choices")])
def test_a_garbage_reply_or_a_backend_error_appends_the_message_with_a_warning(coco_searcher, script, warning):
    llm = Model("scripted", ScriptedBackend(script), retries=0)
    ctx = context(coco_searcher, Models(llm, None, None, None), load_prompt_set(), k=3, tau=1.0, stages="reason")
    chat = build_chat_graph(InMemorySaver())
    send(chat, ctx, "t", "a horse")
    state = send(chat, ctx, "t", "on a beach")
    assert state["description"] == "a horse, on a beach"
    assert warning in state["trace"][0]["warnings"][0]
    assert [t["stage"] for t in state["trace"]] == ["refine", "caption", "reason", "retrieve"]  # the turn went on


def test_each_turn_runs_the_search_stages_with_evidence(coco_searcher):
    """Refine, then plan, retrieve and verify (the stored captions checked, no model call), as a
    search would: the turn's results carry the evidence, and its trace names every stage."""
    from lensgraph.graphs.chat import turn_state

    def script(request):
        if "New message: " in request.prompt:
            return json.dumps({"description": "a horse on a beach."})
        return plan_for(request.prompt)

    llm = Model("scripted", ScriptedBackend(script))
    models = Models(llm, None, None, None)
    ctx = context(coco_searcher, models, load_prompt_set(), k=10, tau=1.0, stages="verify", verifier="captions",
                  matcher=CaptionMatcher())
    state = send(build_chat_graph(InMemorySaver()), ctx, "t", "a horse on a beach")
    assert [t["stage"] for t in state["trace"]] == ["refine", "caption", "reason", "retrieve", "verify"]
    turn = turn_state(state)
    assert turn["questions"] == [{"question": "Is there a horse?", "expected": "yes"}]
    results = coco_searcher.results_of(turn)
    found = [c["id"] for c in state["candidates"]]
    assert set(found) == set(turn["rankings"]["retrieve"][:10]) and turn["rankings"]["verify"] == found
    captions = coco_searcher.index.metadata(found)
    horses = [i for i in found if "horse" in captions[i]["caption"].lower()]
    assert horses and found[: len(horses)] == horses  # verified horses first
    assert [r.id for r in results] == found and all(r.evidence and r.relevance is not None for r in results)


def test_cli_chat_resumes_a_thread(coco_searcher):
    db = str(coco_searcher.settings.db)
    first = cli_json("chat", "--db", db, "--thread", "walk", "-m", "a horse", "-m", "on a beach", "--tau", "1", "--k", "5")
    assert [t["round"] for t in first["turns"]] == [1, 2]
    resumed = cli_json("chat", "--db", db, "--thread", "walk", "-m", "with two riders", "--tau", "1", "--k", "5")
    turn = resumed["turns"][0]
    assert turn["round"] == 3 and turn["description"] == "a horse, on a beach, with two riders"
    assert len(turn["results"]) == 5 and "beach" in turn["results"][0]["caption"].lower()


def test_a_thread_keeps_one_checkpoint_however_many_turns(coco_searcher, tmp_path):
    """chats.sqlite holds each thread's latest state (the whole dialogue and the last search), not a
    copy of the state after every step of every turn."""
    import sqlite3

    from lensgraph.graphs.chat import sqlite_checkpointer

    path = tmp_path / "chats.sqlite"
    chat_graph = build_chat_graph(sqlite_checkpointer(path))
    ctx = context(coco_searcher, Models(None, None, None, None), load_prompt_set(), k=5, tau=1.0, stages="retrieve")
    for message in ["a horse", "on a beach", "with two riders", "at sunset"]:
        state = send(chat_graph, ctx, "walk", message)
    send(chat_graph, ctx, "other", "a cat")
    rows = dict(sqlite3.connect(path).execute("SELECT thread_id, COUNT(*) FROM checkpoints GROUP BY thread_id").fetchall())
    assert rows == {"walk": 1, "other": 1}
    resumed = chat_graph.get_state({"configurable": {"thread_id": "walk"}}).values
    assert resumed["dialogue"] == ["a horse", "on a beach", "with two riders", "at sunset"]
    assert [t["ranking"] for t in resumed["history"]][-1] == [c["id"] for c in state["candidates"]]
    assert resumed["search"]["rankings"]["retrieve"][:5] == [c["id"] for c in state["candidates"]]
