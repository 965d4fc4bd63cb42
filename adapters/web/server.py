"""Serving the web app with uvicorn, in this process (`lensgraph serve` calls `serve`)."""

from __future__ import annotations

import logging

import uvicorn

from lensgraph.adapters.tools import ImageTools
from lensgraph.adapters.web.app import create_app
from lensgraph.adapters.web.security import check_bind, is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def build_server(tools: ImageTools, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
                 log_level: str = "warning", warm_up: bool = True) -> uvicorn.Server:
    """A uvicorn server for the app; refuses a non-loopback address without a token. `server.run()`
    serves until interrupted (or `server.should_exit = True` from another thread)."""
    check_bind(host, token)
    app = create_app(tools, token, loopback_only=is_loopback(host), warm_up=warm_up)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level.lower(), access_log=False,
                            proxy_headers=False, server_header=False, timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def serve(tools: ImageTools, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
          log_level: str = "warning") -> None:
    """Serve until interrupted."""
    server = build_server(tools, host, port, token, log_level)
    logging.getLogger("lensgraph.web").info("serving on %s:%s", host, port)
    server.run()
