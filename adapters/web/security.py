"""Who may talk to the web app, and how much they may send: the HTTP side of the boundary that
`lensgraph.adapters.tools.ImageTools` draws for files, sizes and limits.

- Binding: loopback by default; any other address needs a token (`check_bind`).
- Token: with one set, every /api request carries it as `Authorization: Bearer T`, a `token` query
  parameter, or the `lensgraph_token` cookie (the page's <img> tags cannot send headers; opening
  `/?token=T` sets the cookie). Compared in constant time.
- Browsers: a request whose Origin is another site is refused (no cross-site POSTs to a server on
  127.0.0.1), and on loopback only loopback Host names are answered (no DNS rebinding).
- Bodies: at most `body_limit` bytes, counted as they arrive (Content-Length or not); more is a 413
  before the app parses anything, whose message states the operator's image limit (`--max-upload`),
  the number a caller can act on, not the body cap derived from it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lensgraph.pipeline.errors import LensgraphError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "lensgraph_token"
DRAIN_FACTOR = 8
LOOPBACK_NAMES = ("localhost", "localhost.", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether an address or host name only ever reaches this machine."""
    name = host.strip("[]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise LensgraphError(
            f"Refusing to serve on {host} without a token: anyone who can reach that address could search "
            "your photos. Pass --token SECRET (or set LENSGRAPH_TOKEN), or keep --host 127.0.0.1."
        )


def describe_binding(host: str, port: int, token: str | None) -> str:
    """The start-up line: where the app is and what a visitor needs."""
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    if token:
        return f"Serving {url} (a token is required: open {url}?token=YOUR_TOKEN, or send Authorization: Bearer YOUR_TOKEN)"
    return f"Serving {url} (no token required: reachable from this machine only)"


def host_name(host: str) -> str:
    """The name part of a Host header: "127.0.0.1:8765" -> "127.0.0.1", "[::1]:80" -> "::1"."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def headers_of(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def cookie_value(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def presented_token(scope: Scope) -> str | None:
    """The token a request carries: header, then query parameter, then cookie."""
    headers = headers_of(scope)
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0]
    return cookie_value(headers.get("cookie", ""), COOKIE)


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


async def send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers]})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """ASGI middleware: host and origin checks for every request, the token for /api, the body cap."""

    def __init__(self, app: ASGIApp, token: str | None, image_limit: int, body_limit: int, loopback_only: bool):
        self.app, self.token, self.loopback_only = app, token, loopback_only
        self.image_limit, self.body_limit = image_limit, body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is not None:
            status, message = refusal
            extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
            return await send_json(send, status, {"error": message}, extra)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            body = await self.read_body(receive)
            if body is None:
                return await send_json(send, 413, {"error": self.too_large()}, [(b"connection", b"close")])
            receive = replay(body, receive)
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = headers_of(scope)
        host = headers.get("host", "")
        if self.loopback_only and not is_loopback(host_name(host)):
            return 421, "This server answers only to localhost / 127.0.0.1."
        origin = headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc.lower() != host.lower():
            return 403, "Cross-site requests are refused; open the page from this server."
        if self.token and scope["path"].startswith("/api/") and not token_matches(presented_token(scope), self.token):
            return 401, "This server needs a token: send Authorization: Bearer TOKEN, or open /?token=TOKEN once."
        return None

    def too_large(self) -> str:
        return (f"The request is too large: an image may be at most {self.image_limit:,} bytes "
                "(the server's limit, set by its operator). Send a smaller image.")

    async def read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None when it passes the limit. Past the limit nothing is kept, but up to
        a few times the limit is still read and dropped, so the client, which is still sending,
        gets the 413 instead of a broken connection; beyond that the connection is closed."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            size += len(message.get("body", b""))
            if size <= self.body_limit:
                chunks.append(message.get("body", b""))
            if not message.get("more_body") or size > DRAIN_FACTOR * self.body_limit:
                break
        return b"".join(chunks) if size <= self.body_limit else None


def replay(body: bytes, original: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then the connection's own messages
    (so a streaming response still learns when the client goes away)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive
