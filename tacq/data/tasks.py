"""Tasks: an example (a prompt and an answer), a task's calibration / dev / held-out
splits, the bundled tasks and text, and the digest every cache key takes from the data.

Reading files and tables: tacq.data.reading; tokens and batches: tacq.data.batches (the
prompt and the answer are tokenized apart, so the answer span is known exactly).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tacq.errors import TacqError

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).resolve().parents[2] / "assets" / "tasks"
# Tasks no preset, lever or demo pick was ever tuned on: the check that a setting chosen on
# the bundled seven holds on a task it never saw (bench/fresh.py; tests/test_tasks.py).
FRESH_DIR = TASKS_DIR / "fresh"
TEXT_DIR = Path(__file__).resolve().parents[2] / "assets" / "text"
MAX_EXAMPLES = 5000  # per upload, and per calibration set
STYLES = ("completion", "chat")
SPLITS = ("calib", "dev", "heldout")  # calibration, tuning (demo pick, levers), reporting


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str


@dataclass(frozen=True)
class TaskSet:
    """A bundled or user task: calibration, dev and held-out examples, never overlapping.

    Settings are tuned on dev (the demo's pick, the benches' levers) and reported on
    held-out, so a reported number never chose its own settings.
    """

    name: str
    calib: tuple[Example, ...]
    heldout: tuple[Example, ...] = ()
    style: str = "completion"  # 'completion': raw few-shot text; 'chat': chat template
    title: str = ""
    description: str = ""
    dev: tuple[Example, ...] = ()

    def split(self, name: str) -> tuple[Example, ...]:
        """The examples of one split by name ('calib', 'dev' or 'heldout')."""
        if name not in SPLITS:
            raise TacqError(f"Unknown split {name!r}; choose from {', '.join(SPLITS)}.")
        return getattr(self, name)


@dataclass(frozen=True)
class DataConfig:
    max_length: int = 256  # tokens per example; longer prompts are cut from the left
    max_examples: int = 32  # calibration examples used (DESIGN: small defaults on CPU)
    seed: int = 0  # 0: the first max_examples in file order; else a seeded random sample
    version: int = 1

    def __post_init__(self) -> None:
        if not 8 <= self.max_length <= 32768:
            raise TacqError(
                f"Max length must be between 8 and 32768 tokens (got {self.max_length})."
            )
        if not 1 <= self.max_examples <= MAX_EXAMPLES:
            raise TacqError(
                f"Number of examples must be 1..{MAX_EXAMPLES} (got {self.max_examples})."
            )


def assign_splits(splits: list[str], heldout_share: float = 0.25) -> list[str]:
    """Each row's split: the one it names, else the default rule.

    Rows that name no split ('') are dealt out among themselves, in order: every 4th of
    them is held out and the rest calibrate (with fewer than 2 such rows, all calibrate).
    So a file with no split column is split as before, one with a split on every row
    exactly as marked, and in a partly marked one the marked rows keep theirs while the
    unmarked ones are split 3 : 1 without regard to where the marked ones sit.
    """
    step = max(2, round(1 / heldout_share))
    deal = sum(1 for s in splits if not s) >= 2
    out, unmarked = [], 0
    for s in splits:
        if not s:
            s = "heldout" if deal and unmarked % step == step - 1 else "calib"
            unmarked += 1
        out.append(s)
    return out


def split_counts(task: TaskSet) -> str:
    """'N calib / M dev / K held-out': the words the app and the CLI show for a task."""
    return f"{len(task.calib)} calib / {len(task.dev)} dev / {len(task.heldout)} held-out"


def list_tasks(folder: Path = TASKS_DIR) -> dict[str, dict]:
    """Bundled task sets, the ones settings are tuned on: name -> {title, description,
    style}. folder=FRESH_DIR: the never-tuned ones (fresh_tasks)."""
    index = folder / "index.json"
    meta = json.loads(index.read_text()) if index.exists() else {}
    return {p.stem: meta.get(p.stem, {}) for p in sorted(folder.glob("*.jsonl"))}


def fresh_tasks() -> dict[str, dict]:
    """The bundled tasks that nothing is tuned on (FRESH_DIR)."""
    return list_tasks(FRESH_DIR)


def task_from_examples(name: str, examples: list[Example], style: str = "completion") -> TaskSet:
    """A user task without splits: every 4th example held out for evaluation."""
    return task_from_split_examples(name, examples, [""] * len(examples), style)


def task_from_split_examples(
    name: str, examples: list[Example], splits: list[str], style: str = "completion"
) -> TaskSet:
    """A user task, each example in the split it names ('' : dealt out by assign_splits).

    Every input path (a file for the CLI, an upload, the typed table) ends here, so a
    row's split means the same wherever it came from.
    """
    if style not in STYLES:
        raise TacqError(f"Style must be one of {STYLES} (got {style!r}).")
    if len(splits) != len(examples):
        raise ValueError("one split per example")
    resolved = assign_splits(list(splits))
    part = {k: tuple(e for e, s in zip(examples, resolved) if s == k) for k in SPLITS}
    if examples and not part["calib"]:
        raise TacqError("No example is for calibration; mark some rows as 'calib'.")
    return TaskSet(name, part["calib"], part["heldout"], style, name, dev=part["dev"])


def examples_digest(examples: list[Example] | tuple[Example, ...], style: str) -> str:
    """sha256 of the examples and their style: the data part of cache keys."""
    blob = json.dumps([style, [[e.prompt, e.answer] for e in examples]]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def generic_text() -> str:
    """The bundled generic prose used for perplexity."""
    path = TEXT_DIR / "generic.txt"
    if not path.exists():
        raise TacqError(f"Bundled text {path} is missing.")
    return path.read_text(encoding="utf-8")
