"""Tasks from files, uploads and tables: JSONL / CSV / TXT, bounded before they are read,
every bad row named, and each row in the split it names (`assign_splits` for the rest).

Every input path (a bundled task, the CLI's --data, an upload, the typed table) reads
here, so a row means the same wherever it came from.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from tacq.data.tasks import (
    FRESH_DIR,
    MAX_EXAMPLES,
    SPLITS,
    STYLES,
    TASKS_DIR,
    Example,
    TaskSet,
    assign_splits,
    fresh_tasks,
    list_tasks,
    task_from_split_examples,
)
from tacq.errors import TacqError

MAX_UPLOAD_BYTES = 20 * 2**20  # a larger upload is refused before it is read
MAX_FIELD_CHARS = 20_000  # per prompt or answer
PROMPT_KEYS = ("prompt", "question", "input", "instruction")
ANSWER_KEYS = ("answer", "output", "response", "completion", "target")


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


def load_task(name: str) -> TaskSet:
    """A bundled task by name, or a JSONL file path with a 'split' field per row (rows
    without one are dealt out by assign_splits, as on every other input path)."""
    path = Path(name) if name.endswith(".jsonl") else TASKS_DIR / f"{name}.jsonl"
    if not path.is_file() and (FRESH_DIR / f"{name}.jsonl").is_file():
        path = FRESH_DIR / f"{name}.jsonl"
    if not path.is_file():
        every = [*list_tasks(), *fresh_tasks()]
        raise TacqError(f"Unknown task {name!r}; bundled tasks: {', '.join(every)}.")
    bundled = fresh_tasks() if path.parent == FRESH_DIR else list_tasks()
    meta = bundled.get(path.stem, {})  # a user's own file has none
    parsed = read_parsed(path)
    task = task_from_split_examples(
        path.stem, parsed.examples, parsed.splits, meta.get("style", "completion")
    )
    return replace(
        task, title=meta.get("title", path.stem), description=meta.get("description", "")
    )


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
