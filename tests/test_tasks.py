"""The bundled task sets: splits that never overlap, demonstrations from calibration only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tacq.data.reading import load_task, task_from_rows
from tacq.data.tasks import SPLITS, list_tasks
from tacq.errors import TacqError

ROOT = Path(__file__).resolve().parent.parent
TASKS = list(list_tasks())


def test_files_are_what_the_builder_writes():
    build = [sys.executable, str(ROOT / "scripts" / "build_tasks.py"), "--check"]
    out = subprocess.run(build, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_at_least_seven_tasks_two_of_them_not_lookups():
    assert {"dates", "records"} <= set(TASKS) and len(TASKS) >= 7


@pytest.mark.parametrize("name", TASKS)
def test_splits_are_large_and_disjoint(name):
    task = load_task(name)
    assert len(task.heldout) >= 150 and len(task.dev) >= 32 and len(task.calib) >= 60
    queries = {s: {e.prompt.splitlines()[-1] for e in task.split(s)} for s in SPLITS}
    assert sum(len(q) for q in queries.values()) == sum(len(task.split(s)) for s in SPLITS)
    assert not queries["calib"] & queries["dev"]
    assert not queries["calib"] & queries["heldout"]
    assert not queries["dev"] & queries["heldout"]


@pytest.mark.parametrize("name", TASKS)
def test_demonstrations_come_from_calibration_items(name):
    task = load_task(name)
    solved = {e.prompt.splitlines()[-1] + e.answer for e in task.calib}
    for split in SPLITS:
        for e in task.split(split):
            demos = [line.rstrip(".") for line in e.prompt.splitlines()[:-1]]
            assert len(demos) == 4
            assert set(demos) <= solved, (split, e.prompt)


def test_table_rows_keep_the_dev_split_and_refuse_unknown_ones():
    rows = [
        {"prompt": "a ->", "answer": " b", "split": "calib"},
        {"prompt": "c ->", "answer": " d", "split": "dev"},
        {"prompt": "e ->", "answer": " f", "split": "heldout"},
        {"prompt": "g ->", "answer": " h", "split": ""},
    ]
    task = task_from_rows("t", rows)
    assert [e.prompt for e in task.calib] == ["a ->", "g ->"]
    assert [e.prompt for e in task.dev] == ["c ->"]
    assert [e.prompt for e in task.heldout] == ["e ->"]
    with pytest.raises(TacqError, match="row 2: split 'test'"):
        task_from_rows("t", [rows[0], {**rows[1], "split": "test"}])
    with pytest.raises(TacqError, match="Unknown split"):
        task.split("train")
