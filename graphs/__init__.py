"""LangGraph wiring (state, context, nodes, the retrieval and chat graphs) and what drives it: the
runner (one query, streamed or not) and the benchmark runners (evaluation, chat_evaluation).
Imports pipeline only."""
