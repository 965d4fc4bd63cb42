"""The retrieval graph: caption -> reason -> retrieve -> [propose] -> verify -> judge.

`--stages` picks a prefix: retrieve (caption + instruction embedded, no LLM), reason (+ the LLM's
plan: edits, descriptions, questions), verify (+ verification), judge (+ the judge). With the
default prompt set the plan holds the questions, so propose is skipped; prompt sets whose reason
stage does not write them (imagescope, cireval) get them from propose, ImageScope's second call.
`graph` is the compiled graph. Its runtime `Context` holds the open gallery and the models, which a
LangGraph server (`langgraph dev`) cannot build from a request's JSON, so there is no langgraph.json:
`lensgraph serve` is the server.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from lensgraph.graphs import nodes
from lensgraph.graphs.context import Context
from lensgraph.graphs.state import SearchInput, SearchState


def after_caption(state: SearchState, runtime: Runtime[Context]) -> Literal["reason", "retrieve"]:
    return "reason" if runtime.context.runs("reason") else "retrieve"


def after_retrieve(state: SearchState, runtime: Runtime[Context]) -> Literal["propose", "verify", "__end__"]:
    if not runtime.context.runs("verify") or not state.get("candidates"):
        return END
    return "verify" if "questions" in state else "propose"  # a plan holds them (even none); else ask


def after_verify(state: SearchState, runtime: Runtime[Context]) -> Literal["judge", "__end__"]:
    return "judge" if runtime.context.runs("judge") and runtime.context.settings.alpha > 0 else END


def build_graph(checkpointer=None):
    builder = StateGraph(SearchState, context_schema=Context, input_schema=SearchInput)
    builder.add_node("caption", nodes.caption)
    builder.add_node("reason", nodes.reason)
    builder.add_node("retrieve", nodes.retrieve)
    builder.add_node("propose", nodes.propose)
    builder.add_node("verify", nodes.verify)
    builder.add_node("judge", nodes.judge)
    builder.add_edge(START, "caption")
    builder.add_conditional_edges("caption", after_caption)
    builder.add_edge("reason", "retrieve")
    builder.add_conditional_edges("retrieve", after_retrieve)
    builder.add_edge("propose", "verify")
    builder.add_conditional_edges("verify", after_verify)
    builder.add_edge("judge", END)
    return builder.compile(checkpointer=checkpointer, name="lensgraph")


graph = build_graph()
