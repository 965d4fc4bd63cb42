"""Chat retrieval: a dialogue that refines the target turn by turn.

Each turn the LLM rewrites the target description from the previous one and the new message
(without an LLM, the messages are joined with ", ", ChatIR's dialogue baseline); then the
description goes through the same stages as a search (graphs/graph.py: plan, retrieve, verify,
judge, as far as the context's stages and models go), with the thread's reference image if it has
one. The thread's state lives in a LangGraph checkpointer (SQLite on disk), so
`lensgraph chat --thread ID` resumes a conversation.
"""

from __future__ import annotations

import operator
from pathlib import Path
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from lensgraph.graphs.context import Context
from lensgraph.graphs.graph import graph as search_graph
from lensgraph.graphs.nodes import StageTimer
from lensgraph.graphs.runner import query_input
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.reasoning.replies import join_turns, parse_refined_description


class ChatInput(TypedDict, total=False):
    message: str
    """The user's new message."""
    reference: str | None
    """A reference image for the thread (kept for later turns until another is given)."""


class ChatState(ChatInput, total=False):
    dialogue: Annotated[list[str], operator.add]
    """Every user message so far, oldest first."""
    description: str
    """The current target description."""
    candidates: list[dict[str, Any]]
    """This turn's results, best first: {id, path, score, ...}."""
    search: dict[str, Any]
    """This turn's search: the retrieval graph's final state (plan, rankings, evidence, trace)."""
    history: Annotated[list[dict[str, Any]], operator.add]
    """Per turn: message, description, result ids (for Hits@K per round)."""
    trace: list[dict[str, Any]]
    """This turn's stages."""


def refine(state: ChatState, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx, timer = runtime.context, StageTimer("refine")
    previous, message = state.get("description", ""), state["message"].strip()
    dialogue = state.get("dialogue") or []
    if ctx.models.llm is None or not ctx.runs("reason"):
        description = join_turns(previous, message)
    else:
        template = ctx.prompts["chat"]
        prompt = template.render(
            dialogue="\n".join(f"- {m}" for m in dialogue) or "(nothing yet)",
            description=previous or "(none yet)",
            message=message,
        )
        try:
            text = timer.count(ctx.models.llm.complete(prompt, max_tokens=120, json=template.wants_json, stage="chat")).text
        except Exception as e:  # any backend fault costs the refinement (the message is appended), never the turn
            text = ""
            timer.warnings.append(f"chat: {e}")
        parsed = parse_refined_description(text, previous, message)
        description = parsed.value
        if parsed.warning:
            timer.warnings.append(parsed.warning)
    return {"dialogue": [message], "description": description, "trace": timer.entry()}


def search(state: ChatState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The refined description through the retrieval graph, as a search would run it."""
    found = search_graph.invoke(query_input(state["description"], state.get("reference")), context=runtime.context)
    candidates = found.get("candidates", [])
    turn = {"message": state["message"], "description": state["description"], "ranking": [c["id"] for c in candidates]}
    return {"candidates": candidates, "search": dict(found), "history": [turn],
            "trace": state.get("trace", []) + found.get("trace", [])}


def build_chat_graph(checkpointer=None):
    builder = StateGraph(ChatState, context_schema=Context, input_schema=ChatInput)
    builder.add_node("refine", refine)
    builder.add_node("search", search)
    builder.add_edge(START, "refine")
    builder.add_edge("refine", "search")
    builder.add_edge("search", END)
    return builder.compile(checkpointer=checkpointer, name="lensgraph-chat")


def sqlite_checkpointer(path: str | Path):
    """A checkpointer that keeps chat threads in a SQLite file, each thread's latest checkpoint only."""
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    class LatestSaver(SqliteSaver):
        # langgraph-checkpoint-sqlite declares prune but does not implement it. Checkpoint ids are
        # time-ordered (uuid6), as get_tuple's ORDER BY relies on: the latest is the largest.
        def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
            if strategy != "keep_latest":
                raise NotImplementedError(strategy)
            with self.lock, self.conn:
                for thread in thread_ids:
                    for table in ("writes", "checkpoints"):
                        self.conn.execute(
                            f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_id < (SELECT MAX(checkpoint_id)"
                            f" FROM checkpoints AS c WHERE c.thread_id = ? AND c.checkpoint_ns = {table}.checkpoint_ns)",
                            (thread, thread))

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return LatestSaver(sqlite3.connect(str(path), check_same_thread=False))


def send(chat_graph: Any, ctx: Context, thread: str, message: str, reference: str | None = None) -> ChatState:
    """One turn of a thread: refine the description with the message, search it, return the state.
    A reference image given once stays the thread's reference."""
    if not message.strip():
        raise LensgraphError("Empty message.")
    turn: ChatInput = {"message": message, **({"reference": reference} if reference else {})}
    # One checkpoint per turn, and only the thread's latest kept: the state holds the whole dialogue,
    # so older checkpoints (each with its turn's full search) would only grow the file.
    state = chat_graph.invoke(turn, config={"configurable": {"thread_id": thread}}, context=ctx, durability="exit")
    if chat_graph.checkpointer is not None:
        try:
            chat_graph.checkpointer.prune([thread], strategy="keep_latest")
        except NotImplementedError:  # a checkpointer that keeps every checkpoint (InMemorySaver)
            pass
    return state
chat_graph = build_chat_graph()


def turn_state(state: ChatState) -> dict[str, Any]:
    """A turn as a search's final state (what results and reports read), with the dialogue so far."""
    return {**state.get("search", {}), "dialogue": state.get("dialogue", []), "description": state.get("description"),
            "trace": state.get("trace", [])}

