"""One-click demo: the whole loop on a bundled task, with a stage timeline, then the chat."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app.common import HEAVY, cancel_handler, gradio_progress, handles_errors, variant_choices
from app.quantize_tab import variants_frame
from app.state import ModelRegistry, UserState
from tacq.data import DataConfig, list_tasks, load_task
from tacq.demo import SUGGESTED_PROMPT, demo_specs, plan_demo, run_demo
from tacq.memory import packed_estimate
from tacq.select import DEFAULT_RATIO
from tacq.tables import RESULT_COLUMNS, results_table
from tacq.workflow import Study

INTRO = """### One-click demo
Runs the whole loop on the bundled model and a bundled task: collect gradients, quantize
**TaCQ 3-bit** and **TaCQ 2-bit** (0.35 % of weights kept in 16 bits) and **GPTQ 2-bit**
(nothing kept), evaluate all on held-out examples, then opens the side-by-side chat.
About 5 minutes on a 2-core CPU; *quick* skips the 3-bit variant and uses 8 examples."""


def build() -> SimpleNamespace:
    gr.Markdown(INTRO)
    with gr.Row():
        task = gr.Dropdown(list(list_tasks()), value="antonyms", label="Bundled task")
        quick = gr.Checkbox(False, label="Quick (8 examples, no 3-bit)")
        run = gr.Button("Run the demo", variant="primary", elem_id="demo-run")
        cancel = gr.Button("Cancel")
    status = gr.Markdown(elem_id="demo-status")
    timeline = gr.Dataframe(
        pd.DataFrame(columns=["stage", "status", "elapsed s", "expected s"]),
        label="Stages",
        interactive=False,
        elem_id="demo-timeline",
    )
    table = gr.Dataframe(
        pd.DataFrame(columns=RESULT_COLUMNS),
        label="Held-out results",
        interactive=False,
        elem_id="demo-eval",
    )
    return SimpleNamespace(
        task=task,
        quick=quick,
        run=run,
        cancel=cancel,
        status=status,
        timeline=timeline,
        table=table,
    )


def wire(
    tab: SimpleNamespace,
    user_state: gr.State,
    registry: ModelRegistry,
    tabs: gr.Tabs,
    chat: SimpleNamespace,
    variant_lists: list,
    eval_tables: list,
    variants_table: gr.Dataframe,
) -> None:
    """variant_lists: dropdowns offering variants (chat's columns last); eval_tables: where
    the held-out table also goes (chat and evaluate tabs); variants_table: the Quantize
    tab's list of variants."""
    n_lists = len(variant_lists)

    @handles_errors
    def on_run(user: UserState, task_name: str, quick: bool, progress=gr.Progress()):
        lm = registry.get(user.model_key)
        specs = demo_specs(quick)
        need_bytes = sum(
            packed_estimate(lm.model, bits, DEFAULT_RATIO if kind == "tacq" else 0.0, None)
            for bits, kind in specs
        )
        user.check_room(lm, need_bytes, f"the demo's {len(specs)} variants")
        study = Study(lm, load_task(task_name), DataConfig(max_examples=8 if quick else 32))
        demo = plan_demo(study, quick=quick)
        stop = user.jobs.start("demo")
        keep = [gr.update()] * (n_lists + 3 + len(eval_tables))
        for d in run_demo(demo, gradio_progress(progress, stop)):
            running = next((s.name for s in d.stages if s.status == "running"), None)
            msg = (
                f"Running **{running}**… {d.elapsed_s:.0f} s so far of about "
                f"{d.expected_s:.0f} s expected."
                if running
                else ""
            )
            yield msg, pd.DataFrame(d.timeline()), gr.update(), *keep
        # Only a finished demo changes the session: the examples (not saved over the
        # user's own), the study and the variants.
        user.task, user.study, user.fp_eval = study.task, study, None
        for v in demo.variants:
            user.add_variant(v, lm)
        user.last_eval = demo.results
        names = list(user.variants)
        lists = variant_choices(names, n_lists, demo.variants[0].name, demo.variants[1].name)
        table = results_table(demo.results)
        yield (
            f"Done in **{demo.elapsed_s:.0f} s** (expected {demo.expected_s:.0f} s). The chat "
            "opened with a suggested prompt: press Send.",
            pd.DataFrame(demo.timeline()),
            table,
            *lists,
            gr.update(value=SUGGESTED_PROMPT),
            gr.Tabs(selected="chat"),
            *[table] * len(eval_tables),
            variants_frame(user),
        )

    on_cancel = cancel_handler(
        "demo", "Cancelling… variants made so far are dropped; your session is unchanged."
    )

    outs = [
        tab.status,
        tab.timeline,
        tab.table,
        *variant_lists,
        chat.prompt,
        tabs,
        *eval_tables,
        variants_table,
    ]
    event = tab.run.click(
        on_run, [user_state, tab.task, tab.quick], outs, concurrency_id=HEAVY, concurrency_limit=1
    )
    tab.cancel.click(on_cancel, user_state, tab.status, cancels=[event], concurrency_limit=None)
