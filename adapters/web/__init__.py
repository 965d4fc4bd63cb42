"""lensgraph in a browser: a REST API and one page over the agent boundary (adapters/tools.py).

    from lensgraph.adapters.web import create_app, serve
    serve(ImageTools(settings, ToolConfig(roots=("~/Pictures",))), port=8765)

Needs the `web` extra (fastapi, uvicorn, python-multipart): `pip install 'lensgraph[web]'`.
"""

from lensgraph.adapters.web.app import create_app
from lensgraph.adapters.web.security import check_bind, describe_binding
from lensgraph.adapters.web.server import build_server, serve

__all__ = ["build_server", "check_bind", "create_app", "describe_binding", "serve"]
