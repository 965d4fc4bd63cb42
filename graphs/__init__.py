"""LangGraph wiring: state, context, nodes, and the compiled retrieval graph."""
