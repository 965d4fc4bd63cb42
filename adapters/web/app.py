"""lensgraph in a browser: a FastAPI app with a REST API (OpenAPI at /openapi.json, /docs) and one
page at / (a jinja2 template, one JS file, CSS; no build step).

    app = create_app(ImageTools(settings, ToolConfig(roots=("~/Pictures",))), token=None)

A thin adapter, like the MCP server: every check on files, sizes, limits and text lives in
`ImageTools` (adapters/tools.py) and the operations in `adapters/web/operations.py`; HTTP's own
checks (token, host, origin, body size) are in `adapters/web/security.py`. Every failure becomes a
JSON `{"error": message}` with a redacted message and a fitting status, never a traceback.

Started by `lensgraph serve` (run.py) through `adapters/web/server.py`.

No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time, and they
name this server's request declarations (adapters/web/inputs.py), local to `_api_routes`.
"""

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.routing import Match

from lensgraph.adapters.tools import Busy, Forbidden, ImageTools, NotFound, ToolError, TooLarge, TooManyCalls
from lensgraph.adapters.web import inputs, operations
from lensgraph.adapters.web.inputs import ChatIn, ThreadId
from lensgraph.adapters.web.openapi import document
from lensgraph.adapters.web.operations import Images, SearchParams
from lensgraph.adapters.web.page import render_page
from lensgraph.adapters.web.schemas import ChatOut, ErrorOut, IndexOut, SearchOut, StageEvent, event_schemas
from lensgraph.adapters.web.security import COOKIE, Guard, token_matches
from lensgraph.adapters.web.thumbnails import ThumbnailCache
from lensgraph.pipeline import __version__
from lensgraph.pipeline.errors import IndexNotFound, LensgraphError
from lensgraph.pipeline.redaction import install_log_redaction, redact
from lensgraph.adapters.cli.report import TEMPLATE_DIR

log = logging.getLogger("lensgraph.web")

STATIC = Path(__file__).resolve().parent / "static"
KEEPALIVE_SECONDS = 15.0
BODY_OVERHEAD = 64 * 1024  # the form's other fields and multipart framing, beside the image
ERROR_WHY = {
    400: "Invalid input: a parameter outside its limits, a missing text and reference, a file that is not an image.",
    401: "A token is required (the server was started with one).",
    403: "A path outside the allowed folders, or a request from another site.",
    404: "No such image, file or route.",
    405: "The path does not answer this method; `Allow` lists those it does.",
    413: "An image or request body over the server's size limit (the message says which).",
    421: "A Host name this server does not answer to (bound to loopback, it answers to localhost only).",
    429: "Too many concurrent searches; try again shortly.",
    500: "An internal error (the message is redacted; the server log has the details).",
    503: "The index is not available, or the server is busy; try again shortly.",
}
ALLOW = {"Allow": {"description": "The methods the path answers.", "schema": {"type": "string"}, "required": True}}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": why, **({"headers": ALLOW} if code == 405 else {})}
    for code, why in ERROR_WHY.items()
}
"""Every refusal any operation may answer with (the Guard's 401, 405, 413 and 421 included); the body
is always `{"error": ...}`."""
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


# -- errors --------------------------------------------------------------------------------------


STATUS = {Forbidden: 403, NotFound: 404, TooLarge: 413, TooManyCalls: 429, Busy: 503, ToolError: 400,
          IndexNotFound: 503, LensgraphError: 400}
"""The HTTP status of each kind of refusal or failure (the first class in the error's ancestry here)."""


def status_of(error: BaseException) -> int:
    return next((STATUS[c] for c in type(error).__mro__ if c in STATUS), 500)


def validation_message(error: RequestValidationError) -> str:
    """Which field and why, without echoing the value sent."""
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}" for e in error.errors()]
    return "; ".join(parts) or "The request is not valid."


def error_response(tools: ImageTools, error: BaseException, operation: str = "the request") -> JSONResponse:
    if isinstance(error, HTTPException):
        return JSONResponse({"error": tools.public_text(str(error.detail))}, error.status_code, headers=error.headers)
    if isinstance(error, RequestValidationError):  # 400, as the operations' own refusals of invalid input
        return JSONResponse({"error": tools.public_text(validation_message(error))}, 400)
    return JSONResponse({"error": tools.failure_message(error, operation)}, status_of(error))


def allowed_methods(request: Request) -> str:
    """Every method the request's path answers: Starlette's 405 names only those of the first route
    that matched the path, and a path may have one route per method."""
    methods = {m for route in request.app.router.routes if route.matches(request.scope)[0] is not Match.NONE
               for m in getattr(route, "methods", None) or ()}
    return ", ".join(sorted(methods))


def http_error(tools: ImageTools, request: Request, error: HTTPException) -> JSONResponse:
    allowed = allowed_methods(request) if error.status_code == 405 else ""
    if allowed:  # (a 405 of the static files' mount has no route methods: left as it is)
        error = HTTPException(405, error.detail, headers={**(error.headers or {}), "Allow": allowed})
    return error_response(tools, error)


def safe_route(tools: ImageTools) -> type[APIRoute]:
    """Routes whose every exception (a dependency's or the endpoint's) becomes a JSON error here,
    so nothing reaches the server's own handler, which would log an unredacted traceback."""

    class SafeRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            handler = super().get_route_handler()

            async def safe(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as e:  # every failure answers; failure_message logs the unexpected ones
                    return error_response(tools, e, f"{request.method} {request.url.path}")

            return safe

    return SafeRoute


# -- streaming -----------------------------------------------------------------------------------


class EventPump:
    """Runs a blocking event generator (the graph) in a thread and hands its events to the event
    loop. The thread owns the generator: when the client goes away it stops after the current
    stage and closes the generator itself, which releases the boundary's slot."""

    def __init__(self, tools: ImageTools, events: Iterator[dict[str, Any]]):
        self.tools, self.events = tools, events
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.stopped = threading.Event()
        threading.Thread(target=self._run, name="lensgraph-search", daemon=True).start()

    def _put(self, item: dict[str, Any] | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down)
            self.stopped.set()

    def _run(self) -> None:
        try:
            for event in self.events:
                self._put(event)
                if self.stopped.is_set():
                    break
        except Exception as e:  # reported to the client as an error event (or status), redacted
            self._put({"event": "error", "status": status_of(e), "data": {"error": self.tools.failure_message(e, "search")}})
        finally:
            self.events.close()  # type: ignore[attr-defined]
            self._put(None)

    async def first(self) -> dict[str, Any] | None:
        return await self.queue.get()

    async def sse(self, first: dict[str, Any]) -> AsyncIterator[str]:
        try:
            yield sse_format(first)
            while True:
                try:
                    item = await asyncio.wait_for(self.queue.get(), KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    yield ": still working\n\n"  # a comment line: keeps proxies from closing a quiet stream
                    continue
                if item is None:
                    return
                yield sse_format(item)
        finally:
            self.stopped.set()  # the client left (or the stream ended): stop after the current stage


EVENT_MODELS = {"stage": StageEvent, "done": SearchOut, "error": ErrorOut}


def sse_format(event: dict[str, Any]) -> str:
    """One Server-Sent Event; its data validated against the documented shape (nothing else leaves)."""
    data = EVENT_MODELS[event["event"]].model_validate(event["data"]).model_dump(mode="json")
    return f"event: {event['event']}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def stream(tools: ImageTools, params: SearchParams) -> Response:
    """The search as an event stream; a failure before the first stage is a plain JSON error."""
    pump = EventPump(tools, operations.search_events(tools, params))
    first = await pump.first()
    if first is None or first["event"] == "error":
        error = (first or {}).get("data", {}).get("error", "The search ended without a result.")
        return JSONResponse({"error": error}, (first or {}).get("status", 500))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(pump.sse(first), media_type="text/event-stream", headers=headers)


STREAM_DOC = {
    200: {"description": "Server-Sent Events: `stage` after each stage of the graph (those after retrieve, verify "
                         "and judge carry the ranking: the retrieval grid comes first), then `done` with the final "
                         "answer, or `error`. The data of each is JSON: " + json.dumps(sorted(event_schemas())),
          "content": {"text/event-stream": {}}},
}


# -- the app -------------------------------------------------------------------------------------


def _api_routes(app: FastAPI, tools: ImageTools, images: Images, token: str | None) -> None:
    search_form, search_query = inputs.search_form(tools.config), inputs.search_query(tools.config)
    chat_body = inputs.chat_body(tools.config)

    @app.get("/api/index", response_model=IndexOut, responses=ERRORS, tags=["index"])
    def index_info() -> dict[str, Any]:
        """What the index holds, which stages this server runs, and its limits."""
        return {**operations.index_info(tools), "token_required": bool(token)}

    @app.post("/api/search", response_model=SearchOut, responses=ERRORS, tags=["search"])
    def search(params: Annotated[SearchParams, Depends(search_form)]) -> dict[str, Any]:
        """Search by text, by a reference image (upload, indexed id or path), or both; the whole
        pipeline, then the ranked results with their evidence and the per-stage trace."""
        return operations.run_search(tools, params)

    @app.post("/api/search/stream", responses={**ERRORS, **STREAM_DOC}, response_class=StreamingResponse, tags=["search"])
    async def search_stream(params: Annotated[SearchParams, Depends(search_form)]) -> Response:
        """As POST /api/search, streamed: an event after each stage."""
        return await stream(tools, params)

    @app.get("/api/search/stream", responses={**ERRORS, **STREAM_DOC}, response_class=StreamingResponse, tags=["search"])
    async def search_stream_get(params: Annotated[SearchParams, Depends(search_query)]) -> Response:
        """As POST /api/search/stream, without an upload (for EventSource)."""
        return await stream(tools, params)

    @app.get("/api/images/{image_id}", response_class=Response, responses={**ERRORS, 200: {"content": {"image/*": {}}}},
             tags=["images"])
    def image(image_id: str) -> Response:
        """The indexed file's bytes, if it lies in an allowed folder (404 otherwise)."""
        data, mime = images.original(image_id)
        return Response(data, media_type=mime, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/images/{image_id}/thumbnail", response_class=Response,
             responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}}, tags=["images"])
    def thumbnail(image_id: str, size: Annotated[int, Query(ge=16, le=1024, description="Longest side, px.")] = 256) -> Response:
        """A JPEG thumbnail (made once, cached on disk next to the database)."""
        return Response(images.thumbnail(image_id, size), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400"})

    @app.post("/api/chat/{thread_id}", response_model=ChatOut, responses=ERRORS, tags=["chat"])
    def chat_send(thread_id: ThreadId, body: Annotated[ChatIn, Depends(chat_body)]) -> dict[str, Any]:
        """Send the next message of a conversation; the thread is kept, the same id resumes it."""
        # not a path (image_bytes would read one), and not empty: the schema says a data URL or null
        if body.reference_image is not None and not body.reference_image.startswith("data:"):
            raise ToolError("reference_image is a data URL: data:image/...;base64,....")
        reference = SearchParams(upload=tools.image_bytes(body.reference_image) if body.reference_image is not None else None,
                                 reference_id=body.reference_id, reference_path=body.reference_path)
        return operations.chat_send(tools, thread_id, body.message, body.k, reference)

    @app.get("/api/chat/{thread_id}", response_model=ChatOut, responses=ERRORS, tags=["chat"])
    def chat_thread(thread_id: ThreadId) -> dict[str, Any]:
        """The thread so far (no turns for a new id)."""
        return operations.chat_thread(tools, thread_id)


def _page_routes(app: FastAPI, token: str | None) -> None:
    @app.get("/", include_in_schema=False)
    def page(request: Request) -> Response:
        given = request.query_params.get("token")
        if token and given is not None and token_matches(given, token):
            # remember the token for the page's requests, and take it out of the address bar
            response: Response = RedirectResponse("/", 303)
            response.set_cookie(COOKIE, given, httponly=True, samesite="strict", path="/")
            return response
        html = render_page()
        return Response(html, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:  # none; an empty answer keeps browsers from logging a 404
        return Response(status_code=204)

    @app.get("/static/cards.css", include_in_schema=False)
    def cards_css() -> Response:  # the card styles the HTML report inlines
        return Response((TEMPLATE_DIR / "cards.css").read_bytes(), media_type="text/css")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _warm_up(tools: ImageTools) -> None:
    """Open the index and load the models and encoders before the first request needs them."""
    try:
        ctx = tools.context
        ctx.gallery.text_queries(["warm-up"], ctx.settings.tau)
        log.info("models and index loaded")
    except Exception as e:  # reported again, caller-safe, by the first request
        log.error("could not load the search pipeline: %s", redact(str(e), tools.settings))


def create_app(tools: ImageTools, token: str | None = None, *, loopback_only: bool = True,
               warm_up: bool = True, thumbnails: Path | None = None) -> FastAPI:
    """The web app over `tools`. `token`: required on every /api request when set.
    `loopback_only`: answer only to localhost Host names (on when bound to a loopback address).
    `thumbnails`: the thumbnail cache folder (default: `thumbnails/` next to the database)."""
    install_log_redaction(tools.settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if warm_up:
            threading.Thread(target=_warm_up, args=(tools,), name="lensgraph-warm-up", daemon=True).start()
        yield

    app = FastAPI(title="lensgraph", version=__version__, lifespan=lifespan,
                  description="Find images from language: search an indexed photo collection by text, by example, "
                              "or both, with the evidence behind each result.")
    app.router.route_class = safe_route(tools)
    app.openapi = document(app, tools)  # type: ignore[method-assign]
    app.add_exception_handler(HTTPException, lambda request, e: http_error(tools, request, e))
    app.add_exception_handler(RequestValidationError, lambda request, e: error_response(tools, e))
    cache = ThumbnailCache(thumbnails or tools.settings.db.parent / "thumbnails", tools.settings.max_pixels)
    _api_routes(app, tools, Images(tools, cache), token)
    _page_routes(app, token)
    # a data URL (base64, 4/3 of the bytes) is the largest form of an allowed image: the body cap lets it
    # through, and ImageTools refuses an image over the limit with a message that says so
    app.add_middleware(Guard, token=token, image_limit=tools.config.max_image_bytes,
                       body_limit=tools.config.max_image_bytes * 4 // 3 + BODY_OVERHEAD, loopback_only=loopback_only)
    app.add_middleware(Headers)  # outermost: on the Guard's refusals too
    return app


class Headers:
    """Headers every answer carries: no MIME sniffing, no referrer (the page's URL may hold a
    token), and no use of the API's answers (images included) by other sites' pages."""

    EXTRA = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
             (b"cross-origin-resource-policy", b"same-origin")]

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.EXTRA]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)
