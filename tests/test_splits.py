"""Each row's split is honoured on every input path: a file given to the CLI (--data,
--task FILE.jsonl), an upload in the app (and its good rows kept), the typed table. Rows
that name no split are dealt out by the default rule among themselves (every 4th held out)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tacq.data.reading import load_task, parse_examples, read_task, task_from_rows
from tacq.data.tasks import assign_splits, split_counts, task_from_examples
from tacq.errors import TacqError

# 8 rows: held-out are the first three, one dev; the every-4th rule would hold out rows 4 and 8
MARKED = [
    {"prompt": f"w{i} ->", "answer": f" a{i}", "split": s}
    for i, s in enumerate(["heldout", "heldout", "heldout", "calib", "dev", "calib", "calib", ""])
]


def _jsonl(rows: list[dict]) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def _csv(rows: list[dict]) -> str:
    lines = ["prompt,answer,split"] + [
        f'"{r["prompt"]}","{r["answer"]}",{r["split"]}' for r in rows
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("fmt,text", [("jsonl", _jsonl(MARKED)), ("csv", _csv(MARKED))])
def test_parse_keeps_each_rows_split(fmt, text):
    parsed = parse_examples(text, fmt)
    assert not parsed.problems
    assert parsed.splits == [r["split"] for r in MARKED]


def test_parse_names_a_bad_split_by_line():
    rows = [MARKED[0], {**MARKED[1], "split": "test"}, {**MARKED[2], "split": 3}]
    parsed = parse_examples(_jsonl(rows), "jsonl")
    assert len(parsed.examples) == len(parsed.splits) == 1
    assert len(parsed.problems) == 2
    assert "line 2" in parsed.problems[0] and "'test'" in parsed.problems[0]
    assert "line 3" in parsed.problems[1]


def test_split_names_are_read_loosely():
    text = _jsonl([{**MARKED[0], "split": " HeldOut "}, {**MARKED[1], "split": None}])
    assert parse_examples(text, "jsonl").splits == ["heldout", ""]


def test_unmarked_rows_are_dealt_out_among_themselves():
    assert assign_splits([""] * 8) == ["calib"] * 3 + ["heldout"] + ["calib"] * 3 + ["heldout"]
    # marked rows keep theirs; the unmarked ones count among themselves (4th unmarked held out)
    got = assign_splits(["dev", "", "heldout", "", "", "calib", ""])
    assert got == ["dev", "calib", "heldout", "calib", "calib", "calib", "heldout"]
    assert assign_splits(["", "dev"]) == ["calib", "dev"]  # one unmarked row: calibration
    assert assign_splits(["calib"] * 5) == ["calib"] * 5  # all marked calib: no held-out


def test_a_data_file_is_split_as_marked(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(_jsonl(MARKED))
    task = read_task(path, "completion")
    assert task.name == "mine"
    assert [e.prompt for e in task.heldout] == ["w0 ->", "w1 ->", "w2 ->"]
    assert [e.prompt for e in task.dev] == ["w4 ->"]
    assert [e.prompt for e in task.calib] == ["w3 ->", "w5 ->", "w6 ->", "w7 ->"]
    csv_path = tmp_path / "mine.csv"
    csv_path.write_text(_csv(MARKED))
    assert read_task(csv_path, "completion") == task


def test_a_file_without_splits_keeps_the_every_4th_default(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "split"} for r in MARKED]
    path = tmp_path / "plain.jsonl"
    path.write_text(_jsonl(rows))
    task = read_task(path, "chat")
    assert [e.prompt for e in task.heldout] == ["w3 ->", "w7 ->"]
    assert task.style == "chat" and not task.dev
    from tacq.data.reading import read_examples

    assert task == task_from_examples("plain", read_examples(path), "chat")


def test_task_file_and_table_follow_the_same_rule(tmp_path):
    path = tmp_path / "same.jsonl"
    path.write_text(_jsonl(MARKED))
    from_file = load_task(str(path))
    from_table = task_from_rows("same", MARKED)
    assert from_file.heldout == from_table.heldout == read_task(path).heldout
    assert from_file.dev == from_table.dev and from_file.calib == from_table.calib
    # all rows marked calib in the table: honoured (was: every 4th held out anyway)
    only_calib = task_from_rows("t", [{**r, "split": "calib"} for r in MARKED])
    assert len(only_calib.calib) == 8 and not only_calib.heldout


def test_no_calibration_row_is_refused(tmp_path):
    path = tmp_path / "held.jsonl"
    path.write_text(_jsonl([{**r, "split": "heldout"} for r in MARKED]))
    with pytest.raises(TacqError, match="calib"):
        read_task(path)


def test_split_counts_wording():
    task = task_from_rows("t", MARKED)
    assert split_counts(task) == "4 calib / 1 dev / 3 held-out"


def test_cli_eval_data_scores_only_the_heldout_rows(tmp_path, tiny_lm, capsys):
    from tacq.cli.main import main

    folder = tmp_path / "tiny"
    tiny_lm.model.save_pretrained(folder)
    tiny_lm.tokenizer.save_pretrained(folder)
    data = tmp_path / "mine.jsonl"
    data.write_text(_jsonl(MARKED))
    assert main(["eval", "--model", str(folder), "--data", str(data), "--methods", "fp"]) == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines() if line.lstrip().startswith("original")]
    assert len(table) == 1 and table[0][-1] == "3", out  # "held-out examples": the 3 marked
    assert "4 calib / 1 dev / 3 held-out" in out


# ---------------------------------------------------------------- the app's Examples screen


def _upload_file(tmp_path, rows, name="up.jsonl"):
    path = tmp_path / name
    path.write_text(_jsonl(rows))
    return str(path)


def test_upload_fills_the_split_column(tmp_path):
    from app.data_tab import upload

    user = SimpleNamespace(pending_upload=None)
    frame, message, _ = upload(user, _upload_file(tmp_path, MARKED))
    # marked rows keep theirs; the one unmarked row is dealt out by the default (calib)
    assert list(frame["split"]) == [r["split"] or "calib" for r in MARKED]
    assert "Read 8 example(s)" in message and "4 calib / 1 dev / 3 held-out" in message
    plain = [{k: v for k, v in r.items() if k != "split"} for r in MARKED]
    frame, message, _ = upload(user, _upload_file(tmp_path, plain, "plain.jsonl"))
    assert list(frame["split"]) == (["calib"] * 3 + ["heldout"]) * 2
    assert "6 calib / 0 dev / 2 held-out" in message
    # the table as uploaded makes the same task as the file
    assert (
        task_from_rows("t", frame.to_dict("records")).heldout
        == read_task(tmp_path / "plain.jsonl").heldout
    )


def test_kept_good_rows_keep_their_splits(tmp_path):
    from app.data_tab import keep_good, upload

    user = SimpleNamespace(pending_upload=None)
    rows = [*MARKED[:5], {"question": "no answer"}]
    frame, message, _ = upload(user, _upload_file(tmp_path, rows))
    assert "1 bad row" in message
    frame, message, _ = keep_good(user)
    assert list(frame["split"]) == ["heldout", "heldout", "heldout", "calib", "dev"]
    assert "Kept 5 good row(s)" in message and "1 calib / 1 dev / 3 held-out" in message


def test_status_line_counts_the_splits(tiny_lm):
    from app.data_tab import task_summary
    from tacq.study.workflow import Study

    task = task_from_rows("mine", MARKED)
    user = SimpleNamespace(task=task, study=Study(tiny_lm, task))
    assert "4 calib / 1 dev / 3 held-out" in task_summary(user)
