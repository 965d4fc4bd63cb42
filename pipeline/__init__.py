"""lensgraph building blocks: settings, images, encoders, the gallery index, retrieval.

Nothing here wires a graph or prints; the CLI (run.py) renders what these functions return.
"""

__version__ = "0.1.0"
