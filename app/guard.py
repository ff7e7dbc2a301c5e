"""Refuse requests that did not come from this app's own page: DNS rebinding and CSRF.

A web page can make a browser send requests to 127.0.0.1 in two ways: by rebinding its own
name to 127.0.0.1 (the request then carries `Host: evil.example`) or by posting across
origins (the request carries `Origin: http://evil.example`). Either reaches every endpoint
unless the server checks. So every request must name one of our hosts with our port, and
a request that carries an Origin must come from one of our origins exactly (another port
on localhost is another origin). Jupyter and Ollama refuse the same way.

The guard also bounds what reaches the app over the wire: a body over the limit (counted as
it streams, whatever the headers say), a request with two framings (smuggling), a
`file=` address that would make Gradio fetch another server, and password guessing.
It must wrap everything, Gradio's CORS and compression included: `outermost` does that.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
MAX_BODY_BYTES = 24 * 2**20  # a 20 MB upload with its multipart framing, or a table post
LOOPBACK_BINDS = ("127.0.0.1", "localhost", "::1", "[::1]")
# Gradio serves /file=http://... by fetching that URL, and /proxy=... by proxying it: a page
# elsewhere could make this server reach its network. Any scheme (a: b+c:) or "//" is refused.
FETCHING_ROUTES = ("/gradio_api/file=", "/gradio_api/proxy=")
URL_LIKE = re.compile(r"\s*([a-z][a-z0-9+.\-]*:|[/\\]{2})", re.IGNORECASE)
LOGIN_PATHS = ("/login", "/login/")  # Gradio's login form posts here
MAX_FAILED_LOGINS = 5  # attempts without a success per client address ...
LOGIN_WINDOW_S = 60.0  # ... in this many seconds; then 429 for as long
FRAMING = ("content-length", "transfer-encoding", "host")  # each at most once


@dataclass(frozen=True)
class Allowed:
    """The Host values and Origins this server answers to."""

    hosts: frozenset[str]  # "name:port", lower case
    origins: frozenset[str]  # "scheme://name:port", lower case

    @classmethod
    def for_server(cls, names: list[str], port: int) -> Allowed:
        """Each name at this server's port, or at its own ("studio.lan:443": the address
        clients use when a reverse proxy stands in front)."""
        hosts = set()
        for name, at in (_split_port(n.lower(), port) for n in names):
            hosts.add(f"{name}:{at}")
            if at in (80, 443):  # browsers omit a default port
                hosts.add(name)
        origins = {f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")}
        return cls(frozenset(hosts), frozenset(origins))


def _split_port(name: str, default: int) -> tuple[str, int]:
    """("studio.lan", 443) from "studio.lan:443"; a bare name or "[::1]" gets `default`."""
    head, colon, tail = name.rpartition(":")
    if colon and tail.isdigit() and (head.endswith("]") or ":" not in head):
        return head, int(tail)
    return name, default


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


def fetches_url(path: str) -> bool:
    """Whether this request path asks Gradio to fetch another server (SSRF)."""
    if path.startswith(FETCHING_ROUTES[1]):
        return True  # this app loads no remote Spaces: nothing to proxy
    prefix = FETCHING_ROUTES[0]
    return path.startswith(prefix) and URL_LIKE.match(path[len(prefix) :]) is not None


def framing_error(raw_headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why the body framing is ambiguous, or None: with both Content-Length and
    Transfer-Encoding (or one twice) the server's parser and the guard could read different
    lengths, so the limit would count one body and the app read another."""
    names = [k.decode("latin-1").lower() for k, _ in raw_headers]
    if "content-length" in names and "transfer-encoding" in names:
        return "both Content-Length and Transfer-Encoding"
    repeated = [n for n in FRAMING if names.count(n) > 1]
    return f"{repeated[0]} given twice" if repeated else None


class LoginThrottle:
    """Login attempts per client address: after `limit` without a success in `window_s`
    seconds that address gets 429 for `window_s` seconds, so passwords cannot be guessed
    at network speed. An attempt counts when it starts (parallel guesses count too) and a
    success clears its address."""

    def __init__(
        self,
        limit: int = MAX_FAILED_LOGINS,
        window_s: float = LOGIN_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self.attempts: dict[str, list[float]] = {}
        self.blocked_until: dict[str, float] = {}

    def admit(self, who: str) -> bool:
        """False while `who` is blocked; else count the attempt and let it in."""
        now = self.clock()
        if self.blocked_until.get(who, 0.0) > now:
            return False
        self.blocked_until.pop(who, None)
        recent = [t for t in self.attempts.get(who, []) if now - t < self.window_s] + [now]
        self.attempts[who] = recent
        if len(recent) >= self.limit:
            self.blocked_until[who] = now + self.window_s
            del self.attempts[who]
        if len(self.attempts) > 10_000:  # many addresses: forget the stale ones
            self.attempts = {k: v for k, v in self.attempts.items() if now - v[-1] < self.window_s}
        return True

    def succeeded(self, who: str) -> None:
        self.attempts.pop(who, None)
        self.blocked_until.pop(who, None)


class HostOriginGuard:
    """ASGI middleware, to be the outermost (`outermost`): 403 for a request whose Host or
    Origin is not ours (HTTP and websocket alike) or that would make Gradio fetch a URL,
    before any route, upload parser or CORS handling sees it; 400 for an ambiguous body
    framing; 413 for a body over `max_body` bytes, announced or counted as it streams (a
    JSON post is parsed whole, so it is bounded here); 429 for a login from an address
    with too many recent attempts."""

    def __init__(
        self,
        app,
        allowed: Allowed,
        max_body: int = MAX_BODY_BYTES,
        logins: LoginThrottle | None = None,
    ) -> None:
        self.app = app
        self.allowed = allowed
        self.max_body = max_body
        self.logins = logins or LoginThrottle()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        why = refusal(headers, self.allowed)
        why = why and f"{why}. Open TaCQ Studio at its address"
        if why is None and fetches_url(scope.get("path", "")):
            why = "this server fetches no other address"
        if why is not None:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _plain(send, 403, f"Forbidden: {why}.")
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        framing = framing_error(scope["headers"])
        if framing is not None:
            return await _plain(send, 400, f"Bad request: {framing}.")
        length = headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > self.max_body):
            return await _plain(send, 413, f"Request body over {self.max_body // 2**20} MB.")
        if scope["method"] == "POST" and scope["path"] in LOGIN_PATHS:
            return await self._login(scope, receive, send)
        await self._bounded(scope, receive, send)

    async def _bounded(self, scope, receive, send) -> _Body:
        """Run the app with the body counted; a cut body ends with our 413, not its error."""
        body = _Body(receive, send, self.max_body)
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if not body.cut:
                raise
        return body

    async def _login(self, scope, receive, send) -> None:
        who = (scope.get("client") or ("?", 0))[0]
        if not self.logins.admit(who):
            wait = int(self.logins.window_s)
            text = f"Too many login attempts from this address: try again in {wait} seconds."
            return await _plain(send, 429, text, [(b"retry-after", str(wait).encode())])
        body = await self._bounded(scope, receive, send)
        if body.status is not None and body.status < 400:
            self.logins.succeeded(who)


class _Body:
    """receive/send for one request that count the body as it arrives. Past the limit the
    client gets 413 (if no answer started yet) and the app is told the client left, so an
    upload parser stops and cleans up; what the app answers after that is dropped."""

    def __init__(self, receive, send, limit: int) -> None:
        self._receive, self._send, self.limit = receive, send, limit
        self.seen = 0
        self.status: int | None = None  # of the response, once started
        self.cut = False

    async def receive(self):
        if self.cut:
            return {"type": "http.disconnect"}
        message = await self._receive()
        self.seen += len(message.get("body", b""))
        if self.seen <= self.limit:
            return message
        self.cut = True
        if self.status is None:
            self.status = 413
            await _plain(self._send, 413, f"Request body over {self.limit // 2**20} MB.")
        return {"type": "http.disconnect"}

    async def send(self, message) -> None:
        if self.cut:
            return
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


def outermost(wrap: Callable) -> Callable:
    """A Starlette lifespan that puts `wrap` around the app's whole middleware stack.

    Gradio add_middleware()s its CORS and compression after building the app, so they sit
    outside anything given as app_kwargs middleware: a preflight from any site got CORS
    headers before the guard ran. The stack is built when the lifespan starts, and the
    server accepts no connection before startup ends, so wrapping it there leaves no gap.
    """

    @asynccontextmanager
    async def lifespan(app):
        app.middleware_stack = wrap(app.middleware_stack or app.build_middleware_stack())
        yield

    return lifespan


async def _plain(send, status: int, text: str, extra: list | None = None) -> None:
    """A short text answer that closes the connection: a refused body is not read, and a
    kept-alive connection would read it as the next request."""
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
