"""Progress that reads well in a log: plain lines, about one a second, no redraws."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tacq.progress import line_progress

ROOT = Path(__file__).resolve().parent.parent


def test_line_progress_prints_label_changes_at_most_once_a_second():
    now = [0.0]
    out = io.StringIO()
    report = line_progress("gptq", out, clock=lambda: now[0])
    for step in range(120):  # 4 labels a second for 30 s, as GPTQ's groups go by
        now[0] = step / 4
        report(step / 120, f"block {step // 4 + 1}/30: group {step % 4}")
    report(1.0, "done in 30 s")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert 28 <= len(lines) <= 32  # about one a second, plus the last
    assert lines[0] == "gptq   0% block 1/30: group 0"
    assert lines[-1] == "gptq 100% done in 30 s"


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_cli_writes_plain_lines_when_stderr_is_a_log(tmp_path, tiny_lm):
    folder = tmp_path / "tiny"
    tiny_lm.model.save_pretrained(folder)
    tiny_lm.tokenizer.save_pretrained(folder)
    env = {**os.environ, "TACQ_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "tacq", "scores", "--model", str(folder), "--examples", "8"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    log = run.stderr
    assert "\r" not in log and "\x1b[" not in log  # no bar redraws, no cursor moves
    lines = [x for x in log.splitlines() if x.strip()]
    assert any(x.startswith("reference 100% ") for x in lines), log[-2000:]
    assert len(lines) < 40 and max(map(len, lines)) < 200, log[-2000:]
    assert "keeps" in run.stdout  # the result still goes to stdout
