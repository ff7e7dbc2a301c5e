"""Refuse requests that did not come from this app's own page: DNS rebinding and CSRF.

A web page can make a browser send requests to 127.0.0.1 in two ways: by rebinding its own
name to 127.0.0.1 (the request then carries `Host: evil.example`) or by posting across
origins (the request carries `Origin: http://evil.example`). Either reaches every endpoint
unless the server checks. So every request must name one of our hosts with our port, and
a request that carries an Origin must come from one of our origins exactly (another port
on localhost is another origin). Jupyter and Ollama refuse the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
MAX_BODY_BYTES = 24 * 2**20  # a 20 MB upload with its multipart framing, or a table post
LOOPBACK_BINDS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class Allowed:
    """The Host values and Origins this server answers to."""

    hosts: frozenset[str]  # "name:port", lower case
    origins: frozenset[str]  # "scheme://name:port", lower case

    @classmethod
    def for_server(cls, names: list[str], port: int) -> Allowed:
        names = [n.lower() for n in names]
        hosts = {f"{n}:{port}" for n in names}
        if port in (80, 443):  # browsers omit a default port
            hosts |= set(names)
        origins = {f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")}
        return cls(frozenset(hosts), frozenset(origins))


def is_loopback(host: str) -> bool:
    return host.lower() in LOOPBACK_BINDS


def refusal(headers: dict[str, str], allowed: Allowed) -> str | None:
    """Why a request with these (lower-cased) headers is refused, or None to let it in."""
    host = headers.get("host", "").lower()
    if host not in allowed.hosts:
        return "unknown Host"
    origin = headers.get("origin")
    if origin is not None and origin.lower() not in allowed.origins:
        return "foreign Origin"
    return None


class BodyTooLarge(Exception):
    pass


class HostOriginGuard:
    """ASGI middleware: 403 for a request whose Host or Origin is not ours (HTTP and
    websocket alike), before any route, upload parser or CORS handling sees it; 413 for a
    body over `max_body` bytes (a JSON post is parsed whole, so it is bounded here)."""

    def __init__(self, app, allowed: Allowed, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.allowed = allowed
        self.max_body = max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        why = refusal(headers, self.allowed)
        if why is not None:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _plain(send, 403, f"Forbidden: {why}. Open TaCQ Studio at its address.")
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        length = headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > self.max_body):
            return await _plain(send, 413, f"Request body over {self.max_body // 2**20} MB.")
        if not length:  # chunked: count as it arrives
            receive = _counting(receive, self.max_body)
        return await self.app(scope, receive, send)


def _counting(receive, limit: int):
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise BodyTooLarge(f"request body over {limit} bytes")
        return message

    return wrapped


async def _plain(send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
