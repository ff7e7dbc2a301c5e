"""Examples screen: bundled task, editable table or upload; then collect gradients."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app.common import HEAVY, PARSE, cancel_handler, gradio_progress, handles_errors, need
from app.state import ModelRegistry, UserState
from tacq.data.reading import (
    MAX_UPLOAD_BYTES,
    ParseResult,
    decode_upload,
    guess_format,
    load_task,
    parse_examples,
    task_from_rows,
)
from tacq.data.tasks import (
    SPLITS,
    TaskSet,
    fresh_tasks,
    list_tasks,
    split_counts,
    task_from_split_examples,
)
from tacq.errors import TacqError

COLUMNS = ["prompt", "answer", "split"]


def task_frame(task: TaskSet) -> pd.DataFrame:
    rows = [[e.prompt, e.answer, split] for split in SPLITS for e in task.split(split)]
    return pd.DataFrame(rows, columns=COLUMNS)


def task_summary(user: UserState) -> str:
    study = user.study
    t = user.task
    n_tok = study.token_count()
    return (
        f"**{t.name}** ({t.style}): {split_counts(t)} examples; the first "
        f"{len(study.calib_examples)} calibration examples are used ({n_tok:,} tokens)."
    )


def upload_frame(parsed: ParseResult) -> tuple[pd.DataFrame, str]:
    """The table of an upload's good rows, each split filled in (the one its row names, or
    the default rule's for rows naming none), and the counts per split to show."""
    frame = pd.DataFrame(parsed.table_rows(), columns=COLUMNS)
    task = task_from_split_examples("upload", parsed.examples, parsed.splits)
    return frame, split_counts(task)


def upload(user: UserState, path: str | None):
    """An uploaded file -> (table, message, whether "Keep only the good rows" shows).

    A file with bad rows changes nothing: its good rows wait in user.pending_upload."""
    if not path:
        return gr.update(), "", gr.update(visible=False)
    p = Path(path)
    if p.stat().st_size > MAX_UPLOAD_BYTES:
        raise TacqError(f"The file is larger than {MAX_UPLOAD_BYTES // 2**20} MB.")
    text = decode_upload(p.read_bytes())
    parsed = parse_examples(text, guess_format(p.name, text))
    if parsed.problems:
        user.pending_upload = parsed.good_rows()
        lines = "\n".join(f"- {m}" for m in parsed.problems[:20])
        msg = (
            f"**{len(parsed.problems)} bad row(s) in {p.name}**; nothing was loaded:\n"
            f"{lines}\n\n{len(parsed.examples)} good row(s) can be kept."
        )
        return gr.update(), msg, gr.update(visible=bool(parsed.examples))
    if not parsed.examples:
        raise TacqError(f"{p.name} holds no examples.")
    frame, counts = upload_frame(parsed)
    return frame, f"Read {len(frame)} example(s) from {p.name}: {counts}.", gr.update(visible=False)


def keep_good(user: UserState):
    """The good rows of the last upload with bad rows, splits kept, into the table."""
    parsed = user.pending_upload or ParseResult()
    user.pending_upload = None
    if not parsed.examples:
        return gr.update(), "No good rows to keep; upload a file.", gr.update(visible=False)
    frame, counts = upload_frame(parsed)
    return (
        frame,
        f"Kept {len(frame)} good row(s) ({counts}); the bad ones were left out.",
        gr.update(visible=False),
    )


def build() -> SimpleNamespace:
    tasks = list_tasks()
    fresh = [(f"{m.get('title', n)} ({n}, never tuned on)", n) for n, m in fresh_tasks().items()]
    with gr.Row():
        bundled = gr.Dropdown(
            label="Bundled task set",
            scale=2,
            choices=[(f"{m.get('title', n)} ({n})", n) for n, m in tasks.items()] + fresh,
            value="antonyms" if "antonyms" in tasks else None,
        )
        style = gr.Radio(
            ["completion", "chat"],
            value="completion",
            label="Prompt style",
            info="completion: raw few-shot text; chat: the model's chat template",
        )
        upload = gr.File(
            label=f"Upload JSONL / CSV (max {MAX_UPLOAD_BYTES // 2**20} MB)",
            file_types=[".jsonl", ".json", ".csv", ".txt"],
            scale=2,
        )
    first = "antonyms" if "antonyms" in tasks else next(iter(tasks), None)
    table = gr.Dataframe(
        task_frame(load_task(first)) if first else None,
        headers=COLUMNS,
        datatype="str",
        interactive=True,
        column_count=3,
        label="Examples (edit freely; split = calib, dev or heldout; blank = auto)",
        max_height=360,
        elem_id="examples-table",
        wrap=True,
    )
    problems = gr.Markdown(elem_id="data-problems")
    keep_good = gr.Button("Keep only the good rows", visible=False)
    with gr.Row():
        use = gr.Button("Use these examples", variant="primary")
        collect = gr.Button("Collect gradients", variant="primary")
        cancel = gr.Button("Cancel", variant="stop")
    status = gr.Markdown(elem_id="data-status")
    return SimpleNamespace(
        bundled=bundled,
        style=style,
        upload=upload,
        table=table,
        problems=problems,
        keep_good=keep_good,
        use=use,
        collect=collect,
        cancel=cancel,
        status=status,
    )


def wire(tab: SimpleNamespace, user_state: gr.State, registry: ModelRegistry) -> None:
    @handles_errors
    def on_bundled(name: str):
        if not name:
            return gr.update(), gr.update()
        task = load_task(name)
        return task_frame(task), task.style

    @handles_errors
    def on_upload(user: UserState, path: str | None):  # the name is the API route
        return upload(user, path)

    @handles_errors
    def on_keep_good(user: UserState):
        return keep_good(user)

    @handles_errors
    def on_use(user: UserState, table: pd.DataFrame, style: str, bundled: str):
        rows = [] if table is None else table.to_dict("records")
        name = bundled if bundled and _same_as_bundled(rows, bundled) else "my-task"
        task = task_from_rows(name, rows, style)
        user.set_task(registry.get(user.model_key), task)
        return task_summary(user), ""

    @handles_errors
    def on_collect(user: UserState, progress=gr.Progress()):
        study = need(user.study, "Choose examples first (Use these examples).")
        stats = study.collect(gradio_progress(progress, user.jobs.start("gradients")))
        kept = f" ({stats.accumulator})" if stats.accumulator else ""
        if stats.from_cache:
            return (
                f"Cache hit: gradients for these {stats.n_samples} examples were loaded "
                f"from disk (nothing recomputed){kept}."
            )
        return (
            f"Collected per-sample |grad| over {stats.n_samples} examples "
            f"({stats.n_tokens:,} tokens, mean loss {stats.mean_loss:.3f}) in "
            f"{stats.seconds:.1f} s{kept}."
        )

    on_cancel = cancel_handler("gradients")

    tab.bundled.change(on_bundled, tab.bundled, [tab.table, tab.style])
    # Parsing uploads and tables has its own small queue: never behind a running GPTQ, and
    # at most two parses at a time however many clients post files.
    tab.upload.upload(
        on_upload,
        [user_state, tab.upload],
        [tab.table, tab.problems, tab.keep_good],
        concurrency_id=PARSE,
        concurrency_limit=2,
    )
    tab.keep_good.click(on_keep_good, user_state, [tab.table, tab.problems, tab.keep_good])
    tab.use.click(
        on_use,
        [user_state, tab.table, tab.style, tab.bundled],
        [tab.status, tab.problems],
        concurrency_id=PARSE,
        concurrency_limit=2,
    )
    tab.collect.click(on_collect, user_state, tab.status, concurrency_id=HEAVY, concurrency_limit=1)
    tab.cancel.click(on_cancel, user_state, tab.status, concurrency_limit=None)


def _same_as_bundled(rows: list[dict], name: str) -> bool:
    try:
        t = load_task(name)
    except TacqError:
        return False
    bundled = task_frame(t).to_dict("records")
    return [tuple(r.get(c) for c in COLUMNS) for r in rows] == [
        tuple(r[c] for c in COLUMNS) for r in bundled
    ]
