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


class HostOriginGuard:
    """ASGI middleware: 403 for a request whose Host or Origin is not ours (HTTP and
    websocket alike), before any route, upload parser or CORS handling sees it."""

    def __init__(self, app, allowed: Allowed) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        why = refusal(headers, self.allowed)
        if why is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        body = f"Forbidden: {why}. Open TaCQ Studio at its own address.".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
