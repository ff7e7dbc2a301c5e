"""The never-tuned tasks: split like the seven, solved by the original model, and read by
nothing that picks a setting (presets, levers, the demo's pick)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tacq.data.reading import load_task
from tacq.data.tasks import SPLITS, fresh_tasks, list_tasks

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
FRESH = list(fresh_tasks())
# results that choose a setting: the lever studies, the demo's pick, and the rows the
# measured preset's rule ranks (quality.json: the rule reads only list_tasks(), tested below)
PICKING_RESULTS = ("levers.json", "demo_pick.json")
PICKING_CODE = ("tacq", "bench/levers.py", "bench/demo_pick.py", "bench/findings.py", "app")


def test_three_fresh_task_kinds_apart_from_the_tuning_seven():
    assert len(FRESH) >= 3
    assert not set(FRESH) & set(list_tasks())
    assert len(list_tasks()) == 7  # every "bundled seven" count stays the seven


@pytest.mark.parametrize("name", FRESH)
def test_fresh_splits_are_large_disjoint_and_demonstrated_from_calibration(name):
    task = load_task(name)
    assert task.title and len(task.heldout) >= 150 and len(task.dev) >= 32
    queries = {s: {e.prompt.splitlines()[-1] for e in task.split(s)} for s in SPLITS}
    assert sum(len(q) for q in queries.values()) == sum(len(task.split(s)) for s in SPLITS)
    solved = {e.prompt.splitlines()[-1] + e.answer for e in task.calib}
    for split in SPLITS:
        for e in task.split(split):
            assert set(e.prompt.splitlines()[:-1]) <= solved, (split, e.prompt)


def test_nothing_that_picks_a_setting_names_a_fresh_task():
    for name in PICKING_RESULTS:  # a task name appears there as a quoted string
        text = (BENCH / "results" / name).read_text(encoding="utf-8")
        assert '"antonyms"' in text and not [t for t in FRESH if f'"{t}"' in text], name
    for where in PICKING_CODE:
        paths = [ROOT / where] if where.endswith(".py") else (ROOT / where).rglob("*.py")
        for path in paths:
            text = path.read_text(encoding="utf-8")
            assert not [t for t in FRESH if f'"{t}"' in text], path


def test_the_preset_rule_ignores_rows_of_fresh_tasks(monkeypatch):
    """Rows of a fresh task that would reverse the ranking if counted leave the pick as is."""
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("findings", "quality", "_common"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import findings

    def dev(task: str, method: str, nll: float) -> dict:
        return {"task": task, "bits": 3, "method": method, "bpw_honest": 3.2,
                "dev": {"answer_nll": nll}}  # fmt: skip

    seven = list(list_tasks())
    rows = [dev(t, "tacq_d0.1_roth", 1.0) for t in seven] + [dev(t, "tacq", 2.0) for t in seven]
    picked, _ = findings.preset_pick(rows, 3)
    many = [dev(f, "tacq", 0.0) for f in FRESH] + [dev(f, "tacq_d0.1_roth", 9.0) for f in FRESH]
    assert findings.preset_pick(rows + many * 5, 3)[0] == picked == "tacq_d0.1_roth"


def test_the_original_model_solves_each_fresh_task_as_measured():
    """bench/fresh.py's record: fp exact match >= 0.5 on dev and held-out, measured on the
    task files as they are now (an edited task shows as unmeasured)."""
    sys.path.insert(0, str(BENCH))
    try:
        from fresh import MIN_FP_EM, file_digest
    finally:
        sys.path.remove(str(BENCH))
    rows = {
        r["task"]: r for r in json.loads((BENCH / "results" / "fresh.json").read_text())["rows"]
    }
    for name in FRESH:
        row = rows[name]
        assert row["digest"] == file_digest(name), f"{name} changed: rerun bench/fresh.py"
        for split in ("dev", "heldout"):
            assert row[split]["exact_match"] >= MIN_FP_EM, (name, split, row[split])
