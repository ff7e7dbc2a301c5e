"""Shared benchmark helpers: environment facts and writing results/<topic>.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


_STARTED = time.time()  # when the bench process started: results record their wall time


def _git(*args: str) -> str:
    try:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "?"
    return run.stdout.strip() if run.returncode == 0 else "?"


def provenance() -> dict:
    """What produced a result: commit, whether the code had uncommitted changes (results
    written by an earlier bench of the same session do not count), the script and its
    arguments, the date."""
    code = ["status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"]
    return {
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git(*code)),
        "args": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "date": time.strftime("%Y-%m-%d"),
    }


def stamp(rows: list[dict]) -> list[dict]:
    """Record on each new result row what produced it (rows merged from earlier runs keep
    their own stamp)."""
    run = provenance()
    for r in rows:
        r["run"] = run
    return rows


def environment() -> dict:
    import torch

    return {
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **provenance(),
        "wall_s": round(time.time() - _STARTED, 1),
    }


def write_result(topic: str, data: dict) -> Path:
    path = ROOT / "bench" / "results" / f"{topic}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": environment(), **data}, indent=2, default=float))
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def no_options(doc: str | None) -> None:
    """The command line of a bench without options: --help explains it instead of running."""
    fmt = argparse.RawDescriptionHelpFormatter
    argparse.ArgumentParser(description=doc, formatter_class=fmt).parse_args()


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]
