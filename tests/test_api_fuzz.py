"""Fuzz the running app's input endpoints through its API, as a script would call them.

At least 500 random calls (ids, uploads, tables, model paths, names, toy settings, ratio
sliders with NaN and infinities, circuit zooms, chat posts with huge prompts and forged
histories, evaluation limits, export names). Each must end in a result or a clear message,
never "Internal error", and the server must stay up with nothing logged as an internal error.
"""

from __future__ import annotations

import json
import random
import string
import urllib.request

import pytest

pytestmark = pytest.mark.slow

CASES_PER_ENDPOINT = 42  # x 12 endpoints: 504 calls
METRICS = ["tacq", "qal", "msg", "magnitude", "random"]


def _text(rng: random.Random, n: int) -> str:
    pools = [string.printable, '{}[]",:\\\n\t0123456789', "é漢字🙂\u2028\u0085\x00\x7f"]
    pool = rng.choice(pools)
    return "".join(rng.choice(pool) for _ in range(n))


def _value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([0, -1, 2**63, 1e308, float("nan"), True])
    if kind == 2:
        return _text(rng, rng.randrange(0, 80))
    if kind == 3:
        return "".join(rng.choice("0123456789abcdef.") for _ in range(rng.choice([32, 97, 98])))
    if kind == 4:
        return "x" * rng.choice([5000, 70_000])
    if kind == 5:
        return rng.choice(["default", "../../etc", "/proc/self", "/dev/zero", "~root", "\x00"])
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {_text(rng, 5): _value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def _table(rng: random.Random) -> dict:
    rows = rng.choice([0, 1, 3, 40, 5001])
    width = rng.choice([3, 3, 1, 5])
    headers = rng.choice([["prompt", "answer", "split"], [_text(rng, 4) for _ in range(width)]])
    cell = [lambda: _text(rng, rng.randrange(0, 30)), lambda: _value(rng, 1)]
    data = [[rng.choice(cell)() for _ in range(len(headers))] for _ in range(rows)]
    return {"headers": headers, "data": data, "metadata": None}


def _number(rng: random.Random) -> float:
    """A slider value as a script might post it: in range, out of range or not a number."""
    return rng.choice(
        [rng.uniform(-5, 150), float("nan"), float("inf"), -float("inf"), 1e308, 0.0, 0.35]
    )


def _history(rng: random.Random) -> list:
    """A chat history as a client might forge it: well formed, huge, or nonsense."""
    kind = rng.randrange(4)
    if kind == 0:
        return []
    if kind == 1:
        turn = {"role": "user", "content": [{"type": "text", "text": "x" * 30_000}]}
        return [turn] * rng.choice([1, 4])  # 30,000 or 120,000 characters
    if kind == 2:
        return [{"role": rng.choice(["user", "assistant", "system"]), "content": _text(rng, 40)}]
    return [{"role": "user", "content": [{"type": "text", "text": _text(rng, 200)}]}] * 3


def _chat(rng: random.Random) -> list:
    prompt = rng.choice([_text(rng, 40), "x" * rng.choice([20_001, 4_000_000]), "", "Paris ->"])
    fp = "original (full precision)"
    return [prompt, _number(rng), rng.choice([8, 1e308, -3]), fp, None, None]


def _upload(rng: random.Random, folder) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        data = rng.randbytes(rng.randrange(0, 4000))
    elif kind == 1:
        data = _text(rng, rng.randrange(0, 3000)).encode("utf-8", "surrogatepass")
    elif kind == 2:
        rows = [{"prompt": _value(rng, 1), "answer": _value(rng, 1)} for _ in range(30)]
        data = "\n".join(json.dumps(r, default=str) for r in rows).encode()
    elif kind == 3:
        data = b"prompt,answer\n" + b"a,b\n" * rng.choice([10, 6000])
    else:
        data = b'{"prompt": "a", "answer": ' + b"9" * 5000 + b"}\n"
    path = folder / f"u{rng.randrange(10**9)}{rng.choice(['.jsonl', '.csv', '.txt', ''])}"
    path.write_bytes(data)
    return str(path)


RAW_CASES = 12  # per raw endpoint below


def _raw_call(url: str, api: str, body: str) -> str | None:
    """Post a JSON body as written (NaN and Infinity included, which gradio_client refuses
    to send) through the public call API; return the error text, or None on success."""
    req = urllib.request.Request(
        f"{url}gradio_api/call/{api}", body.encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        event = json.load(r)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event}", timeout=120) as r:
        stream = r.read().decode()
    if "event: error" not in stream:
        return None
    data = stream.split("event: error", 1)[1].split("data:", 1)[1].strip().splitlines()[0]
    return str(json.loads(data).get("error") or "")


def _raw_bodies(rng: random.Random) -> list[tuple[str, str]]:
    """Slider values a script can post but a browser never sends: NaN, +-Infinity."""
    odd = ["NaN", "Infinity", "-Infinity", "1e999", "-0.0"]
    bodies = []
    for _ in range(RAW_CASES):
        x, y = rng.choice(odd), rng.choice(odd)
        bodies += [
            ("render", f'{{"data": [{x}, {rng.choice([2, 3, 4])}]}}'),
            ("on_ratio", f'{{"data": ["tacq", 3, {x}]}}'),
            ("on_zoom", f'{{"data": ["tacq", 3, {x}, {y}, "down"]}}'),
        ]
    return bodies


def _send_nan_too(monkeypatch) -> None:
    """Let gradio_client post NaN and infinities, as a script with another JSON encoder can
    (httpx refuses them by default), so the handlers behind the sessions meet them too."""
    import httpx._content

    plain = httpx._content.json_dumps
    monkeypatch.setattr(
        httpx._content, "json_dumps", lambda obj, **kw: plain(obj, **{**kw, "allow_nan": True})
    )


def test_api_fuzz_gets_messages_never_internal_errors(tmp_path, monkeypatch):
    import httpx
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from tests.browser_helpers import start_app, stop_app

    proc, url = start_app(tmp_path)
    _send_nan_too(monkeypatch)
    rng = random.Random(2026)
    files = tmp_path / "files"
    files.mkdir()
    outcomes = {"ok": 0, "message": 0, "refused": 0}  # refused: by the client, never sent
    by_api: dict[str, dict[str, int]] = {}  # endpoint -> outcome -> count
    said: dict[str, list[str]] = {}  # endpoint -> the messages, to show on failure
    bad: list[str] = []
    calls = []
    for _ in range(CASES_PER_ENDPOINT):
        calls += [
            ("/on_page_load", lambda: [_value(rng)]),
            ("/on_upload", lambda: [handle_file(_upload(rng, files))]),
            ("/on_use", lambda: [_table(rng), rng.choice(["completion", "chat"]), "antonyms"]),
            ("/on_load", lambda: [_value(rng)]),
            ("/on_bundled", lambda: [rng.choice(["antonyms", "plurals", "capitals"])]),
            ("/render", lambda: [_number(rng), rng.choice(["2", "3", "4"])]),
            ("/on_ratio", lambda: [rng.choice(METRICS), rng.choice([2, 3]), _number(rng)]),
            ("/on_zoom", lambda: [rng.choice(METRICS), 3, _number(rng), _number(rng), "down"]),
            ("/on_send", lambda: [*_chat(rng), _history(rng), _history(rng), _history(rng)]),
            ("/on_eval", lambda: [rng.choice([0, -1, 5, 10**12])]),
            ("/on_settings", lambda: [rng.choice(["paper", "measured", "custom"]), 3]),
            ("/on_export", lambda: [rng.choice([None, "../../x", "\x00"]), "packed"]),
        ]
    try:
        client = Client(url, verbose=False)
        client.predict(None, api_name="/on_page_load")  # this session's user
        for api, make_args in calls:
            args = make_args()
            try:
                client.predict(*args, api_name=api)
                outcome = "ok"
            except AppError as e:
                outcome = "message"
                said.setdefault(api, []).append(f"{str(args)[:60]}: {str(e)[:80]}")
                if "internal error" in str(e).lower() or not str(e).strip():
                    bad.append(f"{api} {str(args)[:120]}: {e}")
            except httpx.HTTPStatusError as e:  # a body over the server's cap: a clean 413
                outcome = "refused"
                assert e.response.status_code == 413, e
            except ValueError as e:  # the client refused to send a value (not the server)
                outcome = "refused"
                said.setdefault(api, []).append(f"{str(args)[:60]}: refused: {str(e)[:80]}")
                assert "choices" in str(e) or "not" in str(e), e
            outcomes[outcome] += 1
            tally = by_api.setdefault(api, {})
            tally[outcome] = tally.get(outcome, 0) + 1
        for api, body in _raw_bodies(rng):
            text = _raw_call(url, api, body)
            outcomes["ok" if text is None else "message"] += 1
            if text is not None and (not text.strip() or "internal error" in text.lower()):
                bad.append(f"raw {api} {body}: {text!r}")
        with urllib.request.urlopen(url + "healthz", timeout=10) as r:
            assert r.status == 200  # still serving after the barrage
    finally:
        stop_app(proc)
    log = (tmp_path / "app.log").read_text()
    assert not bad, "\n".join(bad[:10])
    assert "internal error" not in log.lower(), log[-3000:]
    # Valid input must succeed every time: a bundled task name, and any browser id the
    # client sends (a forged or garbled one just starts a fresh session).
    assert by_api["/on_bundled"] == {"ok": CASES_PER_ENDPOINT}, said.get("/on_bundled")
    assert "message" not in by_api["/on_page_load"], said.get("/on_page_load")
    assert len(by_api) == 12 and all(sum(t.values()) == CASES_PER_ENDPOINT for t in by_api.values())
    assert sum(outcomes.values()) >= 500, outcomes
    assert outcomes["ok"] > 50 and outcomes["message"] > 50, outcomes  # both paths exercised
