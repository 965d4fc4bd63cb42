"""lensgraph's building blocks, by concern; nothing here wires a graph or prints.

Directly here, the shared basics every part may import: `errors`, `settings` (what a run is
configured with), `files`, `images`, `redaction`; and `gallery`, the facade over an index, its
encoders, ingestion and retrieval. Sub-packages, lowest first (each imports only those before it
and the basics; tests/test_layers.py checks it):
- `models`: model calls (requests, the call cache, backends, encoders, prompt sets, JSON replies);
- `reasoning`: what the graph's reasoning stages compute (plans and their checks, evidence, word matching);
- `store`: the Chroma index, its snapshot and vector caches, exact retrieval;
- `ingest`: adding folders to an index (scan, prepare, write; Ray);
- `evaluation`: benchmarks (datasets, metrics, diagnostics, comparisons, submissions, run files, folds).
"""

__version__ = "0.1.0"
