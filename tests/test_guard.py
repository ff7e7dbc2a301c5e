"""DNS rebinding and cross-origin requests are refused: forged Host and Origin headers,
against the guard alone and against the running app."""

from __future__ import annotations

import http.client
import os
import re
import tempfile
import uuid

import pytest

from app.guard import LOOPBACK_HOSTS, Allowed, HostOriginGuard, refusal

PORT = 7931
OURS = Allowed.for_server(list(LOOPBACK_HOSTS), PORT)


@pytest.mark.parametrize(
    "host,why",
    [
        (f"127.0.0.1:{PORT}", None),
        (f"localhost:{PORT}", None),
        (f"LOCALHOST:{PORT}", None),
        (f"[::1]:{PORT}", None),
        (f"evil.example:{PORT}", "unknown Host"),  # a rebound name
        ("127.0.0.1:8000", "unknown Host"),  # another port
        ("127.0.0.1", "unknown Host"),  # no port: not how a browser names us
        ("", "unknown Host"),
    ],
)
def test_host_must_name_this_server(host, why):
    assert refusal({"host": host}, OURS) == why


@pytest.mark.parametrize(
    "origin,why",
    [
        (f"http://127.0.0.1:{PORT}", None),
        (f"http://localhost:{PORT}", None),
        ("http://evil.example", "foreign Origin"),
        ("http://127.0.0.1:8000", "foreign Origin"),  # another local app is foreign too
        ("null", "foreign Origin"),  # sandboxed frames and file:// pages
        (f"http://127.0.0.1:{PORT}.evil.example", "foreign Origin"),
    ],
)
def test_origin_must_be_our_own(origin, why):
    assert refusal({"host": f"127.0.0.1:{PORT}", "origin": origin}, OURS) == why


def test_guard_answers_403_before_the_route_runs():
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    calls = []

    def upload(request):
        calls.append(request.method)
        return PlainTextResponse("stored")

    app = Starlette(
        routes=[Route("/upload", upload, methods=["GET", "POST"])],
        middleware=[Middleware(HostOriginGuard, allowed=OURS)],
    )
    client = TestClient(app, base_url=f"http://127.0.0.1:{PORT}")
    assert client.get("/upload").text == "stored"
    bad_host = client.get("/upload", headers={"host": f"evil.example:{PORT}"})
    assert bad_host.status_code == 403 and "unknown Host" in bad_host.text
    files = {"files": ("x.txt", b"data")}
    cross = client.post("/upload", files=files, headers={"origin": "http://evil.example"})
    assert cross.status_code == 403 and "foreign Origin" in cross.text
    assert calls == ["GET"]  # neither refused request reached the route


def test_serving_beyond_loopback_needs_allow_list_and_auth(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "environ", os.environ.copy())  # launch sets process variables
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)  # and tempfile's folder
    import launch

    assert launch.main(["--host", "0.0.0.0", "--port", "1"]) == 1
    assert "--allow-host" in capsys.readouterr().err
    bad = tmp_path / "auth"
    bad.write_text("no-colon\n")
    assert launch.main(["--host", "0.0.0.0", "--allow-host", "x", "--auth-file", str(bad)]) == 1
    assert "user:password" in capsys.readouterr().err
    good = tmp_path / "good_auth"
    good.write_text("ann:secret\n")
    lan = ["--host", "0.0.0.0", "--port", "1", "--allow-host", "x", "--auth-file", str(good)]
    assert launch.main(lan) == 1  # a LAN may not load any folder on this disk as a model
    assert "--models-root" in capsys.readouterr().err


def _request(
    port: int, method: str, path: str, headers: dict, body: bytes = b"", to: str = "127.0.0.1"
) -> int:
    conn = http.client.HTTPConnection(to, port, timeout=30)
    conn.putrequest(method, path, skip_host=True)
    for k, v in headers.items():
        conn.putheader(k, v)
    if "Content-Length" not in headers:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    status = conn.getresponse().status
    conn.close()
    return status


@pytest.mark.slow
def test_running_app_refuses_forged_host_and_origin(tmp_path):
    from tests.browser_helpers import start_app, stop_app

    proc, url = start_app(tmp_path)
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    own = {"Host": f"127.0.0.1:{port}"}
    boundary = uuid.uuid4().hex
    upload = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.jsonl"'
        f'\r\nContent-Type: text/plain\r\n\r\n{{"prompt": "a", "answer": "b"}}\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    form = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        assert _request(port, "GET", "/config", own) == 200
        assert _request(port, "GET", "/config", {"Host": f"localhost:{port}"}) == 200
        assert _request(port, "GET", "/config", {"Host": f"evil.example:{port}"}) == 403
        assert _request(port, "GET", "/", {"Host": f"evil.example:{port}"}) == 403
        for origin in ("http://evil.example", f"http://127.0.0.1:{port + 1}", "null"):
            headers = {**own, **form, "Origin": origin}
            assert _request(port, "POST", "/gradio_api/upload", headers, upload) == 403
        headers = {**own, **form, "Origin": f"http://127.0.0.1:{port}"}
        assert _request(port, "POST", "/gradio_api/upload", headers, upload) == 200
        # the one accepted upload sits in the private workspace, readable by us only
        stored = [p for p in (tmp_path / "workspace" / "tmp").rglob("a.jsonl")]
        assert len(stored) == 1 and stored[0].stat().st_mode & 0o077 == 0
        assert (tmp_path / "workspace").stat().st_mode & 0o077 == 0
        big = {**own, "Content-Type": "application/json", "Content-Length": str(30 << 20)}
        assert _request(port, "POST", "/gradio_api/queue/join", big) == 413
    finally:
        stop_app(proc)


# --- transport: body framing and size, remote file addresses, CORS order, logins -------


async def _run_asgi(app, scope: dict, chunks: list[bytes]) -> list[dict]:
    """Call an ASGI app with this request body in chunks; -> the messages it sent."""
    last = len(chunks) - 1
    pending = [
        {"type": "http.request", "body": c, "more_body": i < last} for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _scope(path: str = "/post", headers: list | None = None, method: str = "POST") -> dict:
    own = [(b"host", f"127.0.0.1:{PORT}".encode())]
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": own + [(k.encode(), v.encode()) for k, v in headers or []],
        "client": ("192.0.2.7", 50000),
    }


def _reading_app(seen: list):
    """An app that reads the whole body (as a JSON route does), then answers 200."""

    async def app(scope, receive, send):
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                seen.append("disconnect")
                raise ConnectionError("client left")  # as Starlette's ClientDisconnect
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        seen.append(total)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def test_both_length_headers_get_400_before_the_app_reads():
    import asyncio

    seen: list = []
    guard = HostOriginGuard(_reading_app(seen), allowed=OURS, max_body=100)
    both = [("content-length", "5"), ("transfer-encoding", "chunked")]
    sent = asyncio.run(_run_asgi(guard, _scope(headers=both), [b"x" * 1000]))
    assert sent[0]["status"] == 400 and b"Transfer-Encoding" in sent[1]["body"]
    assert seen == []  # the app never ran
    twice = [("content-length", "5"), ("content-length", "6")]
    assert asyncio.run(_run_asgi(guard, _scope(headers=twice), [b"x" * 5]))[0]["status"] == 400


def test_streamed_body_over_the_cap_gets_a_clean_413():
    import asyncio

    seen: list = []
    guard = HostOriginGuard(_reading_app(seen), allowed=OURS, max_body=100)
    chunked = [("transfer-encoding", "chunked")]
    sent = asyncio.run(_run_asgi(guard, _scope(headers=chunked), [b"x" * 60] * 3))
    assert [m.get("status") for m in sent if "status" in m] == [413]  # the app's answer dropped
    assert (b"connection", b"close") in sent[0]["headers"]
    assert seen == ["disconnect"]  # the app stopped reading: it was told the client left
    sent = asyncio.run(_run_asgi(guard, _scope(headers=chunked), [b"x" * 50] * 2))
    assert sent[0]["status"] == 200 and seen[-1] == 100  # at the cap is fine


@pytest.mark.parametrize(
    "path,refused",
    [
        ("/gradio_api/file=http://10.255.255.1/x", True),
        ("/gradio_api/file=https://example.com/a.png", True),
        ("/gradio_api/file=HTTP://example.com/a.png", True),
        ("/gradio_api/file=ftp://example.com/a", True),
        ("/gradio_api/file=gopher:x", True),
        ("/gradio_api/file=//example.com/a", True),
        ("/gradio_api/file= http://example.com/a", True),
        ("/gradio_api/proxy=https://x.hf.space/a", True),
        ("/gradio_api/file=/tmp/ws/tmp/gradio/abc/a.jsonl", False),
        ("/gradio_api/file=tmp/gradio/abc/a:b.jsonl", False),
        ("/config", False),
    ],
)
def test_file_route_never_fetches_a_url(path, refused):
    import asyncio

    seen: list = []
    guard = HostOriginGuard(_reading_app(seen), allowed=OURS)
    sent = asyncio.run(_run_asgi(guard, _scope(path, method="GET"), [b""]))
    assert (sent[0]["status"] == 403) == refused
    assert (seen == []) == refused


def test_guard_wraps_cors_added_after_it():
    """As Gradio builds its app: our middleware in the constructor, CORS added later."""
    from fastapi import FastAPI
    from starlette.middleware.cors import CORSMiddleware
    from starlette.testclient import TestClient

    from app.guard import outermost

    app = FastAPI(lifespan=outermost(lambda inner: HostOriginGuard(inner, allowed=OURS)))
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_credentials=True, allow_methods=["*"]
    )
    app.add_api_route("/x", lambda: {"ok": True}, methods=["GET", "POST"])
    preflight = {
        "Origin": "http://evil.com",
        "Access-Control-Request-Method": "POST",
    }
    with TestClient(app, base_url=f"http://127.0.0.1:{PORT}") as client:  # runs the lifespan
        assert client.get("/x").json() == {"ok": True}
        answer = client.options("/x", headers=preflight)
        assert answer.status_code == 403
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
        assert isinstance(app.middleware_stack, HostOriginGuard)


def test_logins_throttled_per_address():
    from app.guard import LoginThrottle

    now = [1000.0]
    throttle = LoginThrottle(limit=5, window_s=60, clock=lambda: now[0])
    assert [throttle.admit("a") for _ in range(7)] == [True] * 5 + [False] * 2
    assert throttle.admit("b")  # another address is not blocked
    now[0] += 59
    assert not throttle.admit("a")
    now[0] += 2  # a minute after the fifth attempt
    assert throttle.admit("a")
    throttle.succeeded("a")  # a success forgets the address's attempts
    assert all(throttle.admit("a") for _ in range(4))
    now[0] += 61  # attempts older than the window are forgotten too
    assert all(throttle.admit("a") for _ in range(4))


def test_guard_answers_429_to_a_blocked_address_and_a_success_clears_it():
    import asyncio

    async def login(scope, receive, send):
        body = (await receive())["body"]
        status = 200 if body == b"right" else 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = HostOriginGuard(login, allowed=OURS)

    def attempt(password: bytes) -> int:
        return asyncio.run(_run_asgi(guard, _scope("/login"), [password]))[0]["status"]

    assert [attempt(b"wrong") for _ in range(4)] == [400] * 4
    assert attempt(b"right") == 200  # the fifth attempt runs; it succeeds and clears
    assert [attempt(b"wrong") for _ in range(6)] == [400] * 5 + [429]
    assert attempt(b"right") == 429  # even the right password waits out the minute


def test_upload_leftovers_are_deleted_and_kept_uploads_stay(tmp_path):
    from tempfile import NamedTemporaryFile

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from app.workspace import UploadLeftovers

    def upload(request):  # as Gradio's parser: a temp file, renamed into place if accepted
        f = NamedTemporaryFile(delete=False, dir=tmp_path)
        f.write(b"data")
        f.close()
        if request.query_params.get("name") == "..":
            return PlainTextResponse("Invalid file name", status_code=400)
        if request.query_params.get("drop"):
            raise ConnectionError("client left")
        os.rename(f.name, tmp_path / "kept")
        return PlainTextResponse("ok")

    routes = [Route(p, upload, methods=["POST"]) for p in ("/gradio_api/upload", "/other")]
    app = Starlette(routes=routes, middleware=[Middleware(UploadLeftovers)])
    client = TestClient(app, raise_server_exceptions=False)
    assert client.post("/gradio_api/upload?name=..").status_code == 400
    assert client.post("/gradio_api/upload?drop=1").status_code == 500
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert client.post("/gradio_api/upload").text == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    client.post("/other?name=..")  # another route's temp files are not its business
    assert len(list(tmp_path.iterdir())) == 2


# --- against the running app served as on a LAN ---------------------------------------

LAN = "127.0.0.2"  # not one of the loopback names: the app takes it for a network address


@pytest.fixture(scope="module")
def lan_app(tmp_path_factory):
    """The app bound to LAN with a login, a models root and a proxy's name allowed;
    -> (port, cookie of a logged-in session, its gradio temp dir)."""
    from tests.browser_helpers import start_app, stop_app

    home = tmp_path_factory.mktemp("lan_app")
    (home / "auth").write_text("ann:secret\n")
    (home / "models").mkdir()
    lan = ["--host", LAN, "--allow-host", "studio.lan:443", "--models-root", str(home / "models")]
    proc, url = start_app(home, args=[*lan, "--auth-file", str(home / "auth")])
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    try:
        status, cookie = _login(port, "secret")
        assert status == 200
        yield port, cookie, home / "workspace" / "tmp" / "gradio"
    finally:
        stop_app(proc)


def _login(port: int, password: str, via: str | None = None) -> tuple[int, str]:
    """POST the login form (from the proxied address `via`); -> (status, cookie)."""
    conn = http.client.HTTPConnection(LAN, port, timeout=30)
    form = f"username=ann&password={password}"
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Host": f"{LAN}:{port}"}
    if via is not None:  # as a reverse proxy on this machine tells the client's address
        headers["X-Forwarded-For"] = via
    conn.request("POST", "/login", form, headers)
    answer = conn.getresponse()
    answer.read()
    cookies = [c.split(";", 1)[0] for c in answer.msg.get_all("set-cookie") or []]
    conn.close()
    return answer.status, "; ".join(cookies)


def _raw(port: int, head: str, chunks=()) -> tuple[int, str, str]:
    """Send a request head and body pieces on a bare socket; -> (status, head, text).

    Stops sending once the server answers (a refusal does not wait for the body)."""
    import select
    import socket

    with socket.create_connection((LAN, port), timeout=60) as sock:
        sock.sendall(head.encode("latin-1"))
        try:
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break  # answered already
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while b"\r\n\r\n" not in data and (more := sock.recv(65536)):
            data += more
        top, _, rest = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", top)
        while length and len(rest) < int(length.group(1)) and (more := sock.recv(65536)):
            rest += more
    return int(top.split()[1]), top.decode("latin-1"), rest.decode(errors="replace")


def _chunked(pieces: int, size: int = 2**20):
    for _ in range(pieces):
        yield f"{size:x}\r\n".encode() + b" " * size + b"\r\n"
    yield b"0\r\n\r\n"


def _leftovers(folder) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()


def _leftovers_after(folder, expected: set[str], wait_s: float = 15) -> set[str]:
    """The files in folder once they are `expected`, or after wait_s: the server answers
    before it cleans up."""
    import time

    deadline = time.time() + wait_s
    while _leftovers(folder) != expected and time.time() < deadline:
        time.sleep(0.5)
    return _leftovers(folder)


@pytest.mark.slow
def test_running_app_refuses_two_framings_and_cuts_long_streams(lan_app):
    port, _, _ = lan_app
    start = f"POST /gradio_api/cancel HTTP/1.1\r\nHost: {LAN}:{port}\r\n"
    json_type = "Content-Type: application/json\r\n"
    both = start + json_type + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, _, text = _raw(port, both, _chunked(25))
    assert status == 400 and "Transfer-Encoding" in text
    streamed = start + json_type + "Transfer-Encoding: chunked\r\n\r\n"
    status, head, text = _raw(port, streamed, _chunked(30))
    assert status == 413 and "over 24 MB" in text
    assert "connection: close" in head.lower()


@pytest.mark.slow
def test_running_app_guard_answers_before_cors_and_file_urls(lan_app):
    port, cookie, _ = lan_app
    own = {"Host": f"{LAN}:{port}"}
    preflight = {"Origin": "http://evil.com", "Access-Control-Request-Method": "POST"}
    for host in (own, {"Host": "evil.com"}):
        conn = http.client.HTTPConnection(LAN, port, timeout=30)
        conn.request("OPTIONS", "/gradio_api/queue/join", headers={**host, **preflight})
        answer = conn.getresponse()
        assert answer.status == 403
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
        conn.close()
    for address in ("http://10.255.255.1/x", "https://example.com/a.png", "ftp://x/y"):
        headers = {**own, "Cookie": cookie}  # logged in: the guard refuses, not the login
        assert _request(port, "GET", f"/gradio_api/file={address}", headers, to=LAN) == 403
    # what a TLS proxy on this machine forwards for https://studio.lan passes the guard
    proxied = {"Host": "studio.lan", "Origin": "https://studio.lan", "Cookie": cookie}
    assert _request(port, "GET", "/config", proxied, to=LAN) == 200
    assert (
        _request(port, "GET", "/config", {**proxied, "Origin": "https://evil.com"}, to=LAN) == 403
    )


def _upload_head(port: int, cookie: str, filename: str, file_bytes: int) -> tuple[str, str]:
    """The request head and multipart preamble of a one-file upload, and its closing."""
    boundary = uuid.uuid4().hex
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"'
        "\r\nContent-Type: text/plain\r\n\r\n"
    )
    tail = f"\r\n--{boundary}--\r\n"
    head = (
        f"POST /gradio_api/upload HTTP/1.1\r\nHost: {LAN}:{port}\r\nCookie: {cookie}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(part) + file_bytes + len(tail)}\r\n\r\n"
    )
    return head + part, tail


@pytest.mark.slow
def test_running_app_deletes_temp_files_of_failed_uploads(lan_app):
    import socket
    import time

    port, cookie, temp = lan_app
    before = _leftovers(temp)
    head, tail = _upload_head(port, cookie, "..", 1000)
    status, _, text = _raw(port, head, [b"x" * 1000, tail.encode()])
    assert status == 400 and "Invalid file name" in text
    assert _leftovers_after(temp, before) == before
    # a client that drops mid-upload: half of a 4 MB file, then gone
    head, _ = _upload_head(port, cookie, "big.jsonl", 4 * 2**20)
    with socket.create_connection((LAN, port), timeout=30) as sock:
        sock.sendall(head.encode() + b"x" * 2 * 2**20)
        time.sleep(2)  # the server has made its temp file and written into it
        assert len(_leftovers(temp) - before) == 1
    assert _leftovers_after(temp, before) == before


@pytest.mark.slow
def test_running_app_throttles_password_guessing(lan_app):
    """Last of the lan_app tests: it blocks two addresses' logins for a minute."""
    port, _, _ = lan_app
    guesses = [_login(port, f"guess{i}", via="192.0.2.9")[0] for i in range(7)]
    assert guesses == [400] * 5 + [429] * 2
    assert _login(port, "secret", via="192.0.2.9")[0] == 429  # it waits out the minute
    assert _login(port, "wrong", via="192.0.2.10")[0] == 400  # another client does not
    assert [_login(port, f"guess{i}")[0] for i in range(6)] == [400] * 5 + [429]


def test_a_name_with_its_own_port_is_reached_through_a_proxy():
    """Behind a TLS proxy on 443 the browser names studio.lan, not the app's own port."""
    behind = Allowed.for_server(["studio.lan:443", "[::1]", "localhost:8443"], PORT)
    assert refusal({"host": "studio.lan", "origin": "https://studio.lan"}, behind) is None
    assert refusal({"host": "studio.lan:443", "origin": "https://studio.lan:443"}, behind) is None
    assert refusal({"host": "localhost:8443", "origin": "https://localhost:8443"}, behind) is None
    assert refusal({"host": f"[::1]:{PORT}"}, behind) is None
    assert refusal({"host": f"studio.lan:{PORT}"}, behind) == "unknown Host"
    assert refusal({"host": "localhost"}, behind) == "unknown Host"
