"""Task examples: parse and validate, apply the chat template, tokenize, batch.

An example is a prompt and an answer. Loss and metrics treat the answer tokens specially
(answer-only masking, answer NLL, exact match), so the two are tokenized separately and
concatenated: the answer span is then known exactly.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from tacq.errors import TacqError

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).resolve().parent.parent / "assets" / "tasks"
TEXT_DIR = Path(__file__).resolve().parent.parent / "assets" / "text"
MAX_UPLOAD_BYTES = 20 * 2**20  # a larger upload is refused before it is read
MAX_EXAMPLES = 5000  # per upload
MAX_FIELD_CHARS = 20_000  # per prompt or answer
STYLES = ("completion", "chat")
SPLITS = ("calib", "dev", "heldout")  # calibration, tuning (demo pick, levers), reporting
PROMPT_KEYS = ("prompt", "question", "input", "instruction")
ANSWER_KEYS = ("answer", "output", "response", "completion", "target")


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


@dataclass
class ParseResult:
    """Rows that parsed, and one message per row that did not (1-based line numbers).

    splits[i] is the split examples[i]'s row names ('calib', 'dev', 'heldout'), or '' when
    it names none (assign_splits deals those out).
    """

    examples: list[Example] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)

    def good_rows(self) -> ParseResult:
        """The rows that parsed, without the problems (an upload's "keep the good rows")."""
        return ParseResult(list(self.examples), [], list(self.splits))

    def table_rows(self) -> list[dict]:
        """{prompt, answer, split} per example, each split resolved (assign_splits)."""
        return [
            {"prompt": e.prompt, "answer": e.answer, "split": s}
            for e, s in zip(self.examples, assign_splits(self.splits))
        ]

    def strict(self) -> list[Example]:
        """The examples, or a TacqError naming every bad line."""
        if self.problems:
            shown = "; ".join(self.problems[:5])
            more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
            raise TacqError(f"{len(self.problems)} bad row(s): {shown}{more}.")
        if not self.examples:
            raise TacqError("No examples found: give at least one prompt/answer pair.")
        return self.examples


def _field(row: dict, keys: tuple[str, ...]) -> tuple[str | None, object]:
    for k in keys:
        if k in row:
            return k, row[k]
    return None, None


def _example_from_obj(obj: object, where: str) -> Example:
    if isinstance(obj, str):
        return _checked(Example("", obj), where)
    if not isinstance(obj, dict):
        raise TacqError(f"{where}: expected an object with prompt/answer or a string.")
    pk, prompt = _field(obj, PROMPT_KEYS)
    ak, answer = _field(obj, ANSWER_KEYS)
    if pk is None and ak is None and "text" in obj:
        return _checked(Example("", obj["text"]), where)
    if pk is None or ak is None:
        raise TacqError(
            f"{where}: has columns {sorted(obj)[:6]}; expected prompt and answer "
            "(or question/answer, input/output, text)."
        )
    return _checked(Example(prompt, answer), where)


def _checked(ex: Example, where: str) -> Example:
    for label, value in (("prompt", ex.prompt), ("answer", ex.answer)):
        if not isinstance(value, str):
            raise TacqError(f"{where}: {label} is {type(value).__name__}, expected text.")
        if len(value) > MAX_FIELD_CHARS:
            raise TacqError(
                f"{where}: {label} has {len(value):,} characters (limit {MAX_FIELD_CHARS:,})."
            )
    if not (ex.prompt + ex.answer).strip():
        raise TacqError(f"{where}: empty prompt and answer.")
    if "\x00" in ex.prompt + ex.answer:
        raise TacqError(f"{where}: contains a NUL byte (binary data?).")
    return ex


def decode_upload(data: bytes) -> str:
    """Bytes of an upload -> text, refusing binary and oversize files with a clear message."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise TacqError(
            f"The file is {len(data) / 2**20:.0f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB."
        )
    if b"\x00" in data[:8192]:
        raise TacqError("The file looks binary; expected UTF-8 text (JSONL, CSV or lines).")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TacqError(f"The file is not UTF-8 text (byte {e.start}); save it as UTF-8.") from e


def guess_format(name: str, text: str) -> str:
    """'jsonl', 'csv' or 'txt' from the file name, else from the first character."""
    suffix = Path(name).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".txt":
        return "txt"
    return "jsonl" if text.lstrip().startswith(("{", "[", '"')) else "csv"


def parse_examples(text: str, fmt: str) -> ParseResult:
    """Parse JSONL / CSV / plain lines into examples; bad rows are reported, not dropped.

    Rows are read one at a time and reading stops at MAX_EXAMPLES + 1 rows (good or bad),
    so a file of millions of tiny rows costs no more memory or time than the limit allows.
    """
    if fmt not in ("jsonl", "csv", "txt"):
        raise TacqError(f"Unknown format {fmt!r}; use jsonl, csv or txt.")
    result = ParseResult()
    rows = 0
    for n, obj in _rows(text, fmt, result.problems):
        rows += 1
        if rows > MAX_EXAMPLES:
            result.problems.append(f"more than {MAX_EXAMPLES} rows; the limit is {MAX_EXAMPLES}")
            break
        if isinstance(obj, dict) and obj.get("_meta"):
            continue
        try:
            example = _example_from_obj(obj, f"line {n}")
            split = _row_split(obj, f"line {n}")
        except TacqError as e:
            result.problems.append(str(e))
            continue
        result.examples.append(example)
        result.splits.append(split)
    return result


def _row_split(obj: object, where: str) -> str:
    """The split a row names ('' for none: a plain string row, no or a blank split field)."""
    value = obj.get("split") if isinstance(obj, dict) else None
    if value is None or (isinstance(value, float) and value != value):  # NaN from pandas
        return ""
    if not isinstance(value, str):
        raise TacqError(f"{where}: split is {type(value).__name__}; use calib, dev or heldout.")
    split = value.strip().lower()
    if split and split not in SPLITS:
        raise TacqError(f"{where}: split {value!r} is not calib, dev or heldout.")
    return split


def _rows(text: str, fmt: str, problems: list[str]) -> Iterator[tuple[int, object]]:
    """(line number, row) pairs, lazily; a row that cannot be read is a problem, or None."""
    if fmt == "jsonl" and text.lstrip().startswith("["):  # one JSON array of objects/strings
        try:
            rows = json.loads(text)
        except RecursionError:
            problems.append("line 1: JSON nested too deeply")
            return
        except ValueError as e:  # JSONDecodeError, or an integer with thousands of digits
            problems.append(f"line {getattr(e, 'lineno', 1)}: not valid JSON ({_short(e)})")
            return
        if not isinstance(rows, list):
            problems.append("line 1: expected a JSON array of examples")
            return
        yield from enumerate(rows[: MAX_EXAMPLES + 1], 1)
        return
    if fmt == "csv":
        try:
            dialect = csv.Sniffer().sniff(text[:4096], delimiters=",\t;")
        except csv.Error:
            dialect = csv.excel
        reader = csv.DictReader(io.StringIO(text), dialect=dialect)
        try:
            for row in reader:
                yield reader.line_num, {k: v for k, v in row.items() if k is not None}
        except csv.Error as e:
            problems.append(f"line {reader.line_num}: {e}")
        return
    for n, line in enumerate(io.StringIO(text, newline=None), 1):  # \n, \r\n or \r
        if not line.strip():
            continue
        line = line.rstrip("\r\n")
        if fmt == "txt":
            yield n, line
            continue
        try:
            yield n, json.loads(line)
        except RecursionError:
            problems.append(f"line {n}: JSON nested too deeply")
        except ValueError as e:
            problems.append(f"line {n}: not valid JSON ({_short(e)})")


def _short(e: Exception) -> str:
    return getattr(e, "msg", None) or str(e)[:120]


def read_parsed(path: str | Path) -> ParseResult:
    """Read a JSONL/CSV/TXT file of examples with each row's split; any bad row is an error
    naming its line."""
    path = Path(path)
    if not path.is_file():
        raise TacqError(f"Examples file not found: {path}")
    if path.stat().st_size > MAX_UPLOAD_BYTES:
        raise TacqError(f"{path} is larger than {MAX_UPLOAD_BYTES // 2**20} MB.")
    text = decode_upload(path.read_bytes())
    parsed = parse_examples(text, guess_format(path.name, text))
    try:
        parsed.strict()
    except TacqError as e:
        raise TacqError(f"{path.name}: {e}") from e
    return parsed


def read_examples(path: str | Path) -> list[Example]:
    """Read a JSONL/CSV/TXT file of examples (their splits aside: see read_task)."""
    return read_parsed(path).examples


def read_task(path: str | Path, style: str = "completion") -> TaskSet:
    """A user's file as a task named after it, each row in the split it names (the CLI's
    --data); rows naming none are dealt out by assign_splits."""
    parsed = read_parsed(path)
    return task_from_split_examples(Path(path).stem, parsed.examples, parsed.splits, style)


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


def list_tasks() -> dict[str, dict]:
    """Bundled task sets: name -> {title, description, style}."""
    index = TASKS_DIR / "index.json"
    meta = json.loads(index.read_text()) if index.exists() else {}
    return {p.stem: meta.get(p.stem, {}) for p in sorted(TASKS_DIR.glob("*.jsonl"))}


def load_task(name: str) -> TaskSet:
    """A bundled task by name, or a JSONL file path with a 'split' field per row (rows
    without one are dealt out by assign_splits, as on every other input path)."""
    path = Path(name) if name.endswith(".jsonl") else TASKS_DIR / f"{name}.jsonl"
    if not path.is_file():
        raise TacqError(f"Unknown task {name!r}; bundled tasks: {', '.join(list_tasks())}.")
    meta = list_tasks().get(path.stem, {})
    parsed = read_parsed(path)
    task = task_from_split_examples(
        path.stem, parsed.examples, parsed.splits, meta.get("style", "completion")
    )
    return replace(
        task, title=meta.get("title", path.stem), description=meta.get("description", "")
    )


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


# ---------------------------------------------------------------- tokenization


@dataclass(frozen=True)
class Encoded:
    input_ids: tuple[int, ...]
    answer_start: int  # index of the first answer token in input_ids


def prompt_text(tokenizer, prompt: str, style: str) -> str:
    """The text the model sees before the answer: chat-templated or raw."""
    if style == "chat" and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    return prompt


def encode_prompt(tokenizer, prompt: str, style: str) -> list[int]:
    """Token ids of the prompt part (chat text already carries its special tokens)."""
    text = prompt_text(tokenizer, prompt, style)
    chat = style == "chat" and getattr(tokenizer, "chat_template", None)
    return list(tokenizer(text, add_special_tokens=not chat)["input_ids"])


def encode_example(
    tokenizer, ex: Example, style: str, max_length: int
) -> tuple[Encoded, str | None]:
    """Tokenize prompt and answer; cut the prompt from the left if too long (with a warning)."""
    p = encode_prompt(tokenizer, ex.prompt, style) if ex.prompt else []
    answer = ex.answer + (tokenizer.eos_token or "" if style == "chat" else "")
    a = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if not p and not a:
        raise TacqError("An example tokenizes to nothing; give some text.")
    warning = None
    if len(p) + len(a) > max_length:
        warning = f"example of {len(p) + len(a)} tokens cut to {max_length}"
        a = a[: max_length - 1] if len(a) >= max_length else a
        p = p[len(p) - (max_length - len(a)) :] if max_length > len(a) else []
    if not p:  # a plain text example: the first token has no prediction, so it is context
        p, a = a[:1], a[1:]
    return Encoded(tuple(p + a), len(p)), warning


def encode_all(tokenizer, examples, style: str, cfg: DataConfig) -> list[Encoded]:
    """Encode examples, logging one summary warning for all truncations."""
    if not examples:
        raise TacqError("No examples given: add at least one prompt/answer pair.")
    out, cut = [], 0
    for ex in examples:
        enc, warning = encode_example(tokenizer, ex, style, cfg.max_length)
        cut += warning is not None
        out.append(enc)
    if cut:
        log.warning(
            "%d example(s) longer than %d tokens were cut from the left.", cut, cfg.max_length
        )
    return out


@dataclass
class Batch:
    input_ids: Tensor  # (B, T) int64, right-padded
    attention_mask: Tensor  # (B, T) 1 for real tokens
    loss_mask: Tensor  # (B, T) bool: position t is a target predicted from t-1

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


def make_batches(
    encoded: list[Encoded],
    batch_size: int,
    pad_id: int,
    answer_only: bool = False,
    by_length: bool = False,
) -> list[Batch]:
    """Right-padded batches; with answer_only the loss covers the answer tokens only.

    by_length groups examples of similar length (stable sort) so batches carry little
    padding: for consumers that only sum over examples (gradients, Hessians). Off, the
    batches keep the examples' order (evaluation lines results up with examples).
    """
    if by_length:
        encoded = sorted(encoded, key=lambda e: len(e.input_ids))
    batches = []
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i : i + batch_size]
        T = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), T), pad_id, dtype=torch.long)
        att = torch.zeros((len(chunk), T), dtype=torch.long)
        lm = torch.zeros((len(chunk), T), dtype=torch.bool)
        for b, e in enumerate(chunk):
            n = len(e.input_ids)
            ids[b, :n] = torch.tensor(e.input_ids)
            att[b, :n] = 1
            lm[b, (e.answer_start if answer_only else 1) : n] = True
        batches.append(Batch(ids, att, lm))
    return batches


def generic_text() -> str:
    """The bundled generic prose used for perplexity."""
    path = TEXT_DIR / "generic.txt"
    if not path.exists():
        raise TacqError(f"Bundled text {path} is missing.")
    return path.read_text(encoding="utf-8")


def check_table_size(rows: list[dict]) -> None:
    """The same bounds as an upload: at most MAX_EXAMPLES rows and MAX_UPLOAD_BYTES of text
    (a table posted to the API skips the upload checks)."""
    if len(rows) > MAX_EXAMPLES:
        raise TacqError(f"The table has {len(rows):,} rows; the limit is {MAX_EXAMPLES:,}.")
    chars = sum(len(v) for row in rows for v in row.values() if isinstance(v, str))
    if chars > MAX_UPLOAD_BYTES:
        raise TacqError(
            f"The table holds {chars / 2**20:.0f} MB of text; the limit is "
            f"{MAX_UPLOAD_BYTES // 2**20} MB."
        )


def task_from_rows(name: str, rows: list[dict], style: str = "completion") -> TaskSet:
    """A task from table rows {prompt, answer, split}; blank rows are skipped, bad rows named.

    split 'calib' / 'dev' / 'heldout' is honoured; rows with a blank split are dealt out
    by assign_splits (every 4th of them held out). Any other split name is a bad row.
    """
    if style not in STYLES:
        raise TacqError(f"Style must be one of {STYLES} (got {style!r}).")
    check_table_size(rows)
    examples, splits, problems = [], [], []
    for n, row in enumerate(rows, 1):
        prompt, answer = row.get("prompt"), row.get("answer")
        prompt = "" if prompt is None or prompt != prompt else prompt  # NaN from pandas
        answer = "" if answer is None or answer != answer else answer
        if isinstance(prompt, str) and isinstance(answer, str) and not (prompt + answer).strip():
            continue
        if isinstance(answer, str) and not answer.strip():
            problems.append(f"row {n}: the answer is empty")
            continue
        try:
            split = _row_split(row, f"row {n}")
            examples.append(_checked(Example(prompt, answer), f"row {n}"))
            splits.append(split)
        except TacqError as e:
            problems.append(str(e).rstrip("."))
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise TacqError(f"{len(problems)} bad row(s): {shown}{more}.")
    if not examples:
        raise TacqError("The table is empty: add at least one prompt/answer pair.")
    return task_from_split_examples(name, examples, splits, style)
