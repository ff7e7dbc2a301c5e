"""Shared benchmark helpers: environment facts and writing results/<topic>.json."""

from __future__ import annotations

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


def environment() -> dict:
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = "?"
    return {
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
    }


def write_result(topic: str, data: dict) -> Path:
    path = ROOT / "bench" / "results" / f"{topic}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": environment(), **data}, indent=2, default=float))
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]
