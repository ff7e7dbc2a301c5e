"""Every input path is bounded before it is read in full, and bad input is a TacqError."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from tacq.data.reading import (
    MAX_UPLOAD_BYTES,
    check_table_size,
    decode_upload,
    guess_format,
    parse_examples,
    task_from_rows,
)
from tacq.data.tasks import MAX_EXAMPLES
from tacq.errors import TacqError


def _parse(data: bytes, name: str):
    text = decode_upload(data)
    return parse_examples(text, guess_format(name, text))


@pytest.mark.parametrize(
    "data,name",
    [
        (b"a\n" * 9_000_000, "x.txt"),  # 18 MB of one-letter lines
        (b"prompt,answer\n" + b"a,b\n" * 4_500_000, "x.csv"),  # 18 MB of tiny CSV rows
        (b'{"prompt":"a","answer":"b"}\n' * 650_000, "x.jsonl"),
        (b"[" + b'"a",' * 4_000_000 + b'"a"]', "x.json"),  # one JSON array
        (b"1\n" * 9_000_000, "x.jsonl"),  # millions of bad rows: problems stay bounded
    ],
    ids=["txt", "csv", "jsonl", "json-array", "bad-rows"],
)
def test_huge_uploads_stop_at_the_row_limit(data, name, monkeypatch):
    """Reading stops one row past the limit (it read all 4.5 M CSV rows, 33.6 s, before
    streaming; bench/upload_memory.py has the time, this test the behaviour)."""
    import tacq.data.reading

    assert len(data) <= MAX_UPLOAD_BYTES
    read = []
    rows = tacq.data.reading._rows

    def counted(*args):
        for row in rows(*args):
            read.append(1)
            yield row

    monkeypatch.setattr(tacq.data.reading, "_rows", counted)
    tracemalloc.start()
    result = _parse(data, name)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(result.examples) + len(result.problems) <= MAX_EXAMPLES + 1
    assert any(f"more than {MAX_EXAMPLES} rows" in p for p in result.problems)
    assert len(read) == MAX_EXAMPLES + 1  # the rows after it are never read
    # the decoded text is 1x; what parsing adds stays small (was 3 GB for the CSV)
    assert peak < 6 * len(data), peak


def test_a_five_thousand_digit_integer_is_a_bad_row_not_a_crash():
    bad = b'{"prompt": "a", "answer": ' + b"7" * 5000 + b"}\n"
    ok = b'{"prompt": "b", "answer": "c"}\n'
    for data in (bad + ok, b"[" + b"7" * 5000 + b"]"):
        result = _parse(data, "x.jsonl")
        assert result.problems and "not valid JSON" in result.problems[0]
    with pytest.raises(TacqError, match="bad row"):
        _parse(bad + ok, "x.jsonl").strict()


def test_table_posts_are_bounded_like_uploads():
    with pytest.raises(TacqError, match="limit is 5,000"):
        task_from_rows("t", [{"prompt": "a", "answer": "b"}] * (MAX_EXAMPLES + 1))
    big = [{"prompt": "x" * 19_000, "answer": "y"}] * 1200  # 22 MB of text in fields < limit
    with pytest.raises(TacqError, match="MB of text"):
        check_table_size(big)
    with pytest.raises(TacqError, match="characters"):
        task_from_rows("t", [{"prompt": "x" * 30_000, "answer": "y"}])


def test_body_over_the_cap_gets_413():
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from app.guard import LOOPBACK_HOSTS, Allowed, HostOriginGuard

    async def echo(request):
        return PlainTextResponse(str(len(await request.body())))

    allowed = Allowed.for_server(list(LOOPBACK_HOSTS), 7931)
    app = Starlette(
        routes=[Route("/post", echo, methods=["POST"])],
        middleware=[Middleware(HostOriginGuard, allowed=allowed, max_body=1000)],
    )
    client = TestClient(app, base_url="http://127.0.0.1:7931")
    assert client.post("/post", content=b"x" * 1000).text == "1000"
    assert client.post("/post", content=json.dumps(["a"] * 400).encode()).status_code == 413
