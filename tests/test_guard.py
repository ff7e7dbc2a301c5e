"""DNS rebinding and cross-origin requests are refused: forged Host and Origin headers,
against the guard alone and against the running app."""

from __future__ import annotations

import http.client
import os
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


def _request(port: int, method: str, path: str, headers: dict, body: bytes = b"") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
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
