"""bench/README.md and its appendices are generated from the committed results: no
hand-copied numbers, and the README stays one page."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_bench_readme_is_what_tables_py_writes(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("tables", "findings", "quality", "onepage", "demo_pick", "_common"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import onepage
    import tables

    pages = tables.readme_pages()
    assert set(pages) == {"README.md", *(f"results/{n}.md" for n, _ in tables.APPENDICES)}
    for path, want in pages.items():
        got = (BENCH / path).read_text(encoding="utf-8")
        assert got == want, (
            f"bench/{path} is stale or hand-edited: run python bench/tables.py --write"
        )
    readme = pages["README.md"]
    assert len(readme.splitlines()) <= onepage.LINES_MAX
    for name, _ in tables.APPENDICES:  # the page links every appendix
        assert f"](results/{name}.md)" in readme
    for head in ("## Which recipe at 2, 3 and 4 bits", "## Verdicts, one per target"):
        assert head in readme


def test_every_committed_result_records_where_it_came_from():
    import json

    for path in sorted((BENCH / "results").glob("*.json")):
        env = json.loads(path.read_text())["environment"]
        assert env.get("commit") and env.get("date"), path.name


def test_readme_fit_table_is_the_committed_result(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("tables", "findings", "quality", "onepage", "demo_pick", "_common"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import tables

    text = (BENCH.parent / "README.md").read_text(encoding="utf-8")
    for start, end in (tables.README_FIT, tables.README_DEMO):
        assert start in text and end in text
    assert tables.readme_with_fit(text) == text, (
        "README.md's auto-fit table or demo figures are stale: run python bench/tables.py --write"
    )


def test_tables_read_the_bundled_seven_apart_from_fresh_tasks_and_other_seeds(
    monkeypatch, tmp_path
):
    """Rows of a never-tuned task or of another peer calibration sample never enter a table
    or a count of the seven: they sit apart, for the lines that report them."""
    import json

    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("tables", "findings", "quality", "onepage", "demo_pick", "_common"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import tables

    from tacq.data.tasks import fresh_tasks

    fresh = next(iter(fresh_tasks()))
    rows = [
        {"task": "antonyms", "bits": 2, "method": "hqq_g64", "peer": "hqq"},
        {"task": "antonyms", "bits": 2, "method": "hqq_g64", "peer": "hqq", "seed": 1},
        {"task": fresh, "bits": 2, "method": "hqq_g64", "peer": "hqq"},
    ]
    (tmp_path / "peers.json").write_text(json.dumps({"rows": rows}))
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    tables.load.cache_clear()
    d = tables.load("peers")
    assert (d["rows"], d["seed_rows"], d["fresh_rows"]) == ([rows[0]], [rows[1]], [rows[2]])
    tables.load.cache_clear()
