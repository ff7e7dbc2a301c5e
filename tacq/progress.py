"""One progress hook for every long step: a callable taking a fraction and a label.

The library calls it and never owns a bar; the CLI passes a tqdm adapter and the app a
gr.Progress adapter. To cancel, the hook raises `Cancelled`.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from tacq.errors import Cancelled

Progress = Callable[[float, str], None]
STOPPED = "Stopped. Nothing was saved; earlier results are unchanged."


def no_progress(frac: float, label: str) -> None:
    """Default hook: report nothing."""


def scaled(progress: Progress | None, start: float, end: float) -> Progress:
    """Map a sub-step's [0, 1] onto [start, end] of the parent's bar."""
    hook = progress or no_progress

    def report(frac: float, label: str) -> None:
        hook(start + (end - start) * min(max(frac, 0.0), 1.0), label)

    return report


def tqdm_progress(desc: str = "") -> Progress:
    """A tqdm bar over [0, 100] percent, for the CLI."""
    from tqdm import tqdm

    bar = tqdm(total=100, desc=desc, bar_format="{desc} {percentage:3.0f}%|{bar}| {postfix}")

    def report(frac: float, label: str) -> None:
        bar.n = round(100 * frac)
        bar.set_postfix_str(label)
        bar.refresh()
        if frac >= 1.0:
            bar.close()

    return report


def line_progress(
    desc: str = "",
    stream: TextIO | None = None,
    min_interval_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> Progress:
    """Plain lines for logs: one when the step's label changes, at most one per
    min_interval_s, and always the last (frac 1). No carriage returns, no redraws."""
    last = {"t": -math.inf, "label": None}

    def report(frac: float, label: str) -> None:
        now = clock()
        due = label != last["label"] and now - last["t"] >= min_interval_s
        if due or frac >= 1.0:
            out = stream or sys.stderr
            print(
                f"{desc} {100 * min(max(frac, 0.0), 1.0):3.0f}% {label}".strip(),
                file=out,
                flush=True,
            )
            last["t"], last["label"] = now, label

    return report


def cli_progress(desc: str = "") -> Progress:
    """A tqdm bar on a terminal; plain lines when stderr is a log (CI, nohup, | tee)."""
    return tqdm_progress(desc) if sys.stderr.isatty() else line_progress(desc)


def cancellable(progress: Progress | None, stop: threading.Event) -> Progress:
    """Wrap a hook so that setting `stop` cancels the step at its next report."""
    hook = progress or no_progress

    def report(frac: float, label: str) -> None:
        if stop.is_set():
            raise Cancelled(STOPPED)
        hook(frac, label)

    return report
