"""bench/README.md is generated from the committed results: no hand-copied numbers."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_bench_readme_is_what_tables_py_writes(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("tables", "findings", "quality", "_common"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import tables

    want = tables.readme()
    got = (BENCH / "README.md").read_text(encoding="utf-8")
    assert got == want, (
        "bench/README.md is stale or hand-edited: run python bench/tables.py --write"
    )


def test_every_committed_result_records_where_it_came_from():
    import json

    for path in sorted((BENCH / "results").glob("*.json")):
        env = json.loads(path.read_text())["environment"]
        assert env.get("commit") and env.get("date"), path.name


def test_readme_fit_table_is_the_committed_result(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("tables", "findings", "quality", "_common"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import tables

    text = (BENCH.parent / "README.md").read_text(encoding="utf-8")
    assert tables.README_FIT[0] in text and tables.README_FIT[1] in text
    assert tables.readme_with_fit(text) == text, (
        "README.md's auto-fit table is stale: run python bench/tables.py --write"
    )
