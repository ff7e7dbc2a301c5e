"""One-click demo: the whole loop on a bundled task, a stage timeline, then a gallery of
answers and the chat with a suggested prompt."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app.common import HEAVY, cancel_handler, gradio_progress, handles_errors, variant_choices
from app.quantize_tab import variants_frame
from app.state import ModelRegistry, UserState
from tacq.data import DataConfig, list_tasks, load_task
from tacq.demo import (
    DEMO_HELDOUT,
    DEMO_RATIO,
    DEMO_TASK,
    FULL_EXAMPLES,
    QUICK_EXAMPLES,
    demo_specs,
    plan_demo,
    run_demo,
    suggested_prompt,
)
from tacq.memory import packed_estimate
from tacq.tables import GALLERY_SIZE, RESULT_COLUMNS, gallery, gallery_right, results_table
from tacq.workflow import Study

INTRO = f"""### One-click demo
Runs the whole loop on the bundled model and a bundled task: collect gradients, quantize
**TaCQ 3-bit** and **TaCQ 2-bit** ({100 * DEMO_RATIO:.2f} % of weights kept in 16 bits)
and **GPTQ 2-bit** (per channel, nothing kept), evaluate all on {DEMO_HELDOUT} held-out
examples and show a gallery of their answers; the side-by-side chat then has a suggested
prompt ready (TaCQ 2-bit next to GPTQ 2-bit; pick any variant per column). The default task and
ratio are where 2-bit TaCQ and GPTQ differ most on the tasks' dev examples
(`bench/demo_pick.py`). *Quick* skips the 3-bit variant and uses {QUICK_EXAMPLES} examples
instead of {FULL_EXAMPLES}."""


def build() -> SimpleNamespace:
    gr.Markdown(INTRO)
    with gr.Row():
        task = gr.Dropdown(list(list_tasks()), value=DEMO_TASK, label="Bundled task")
        quick = gr.Checkbox(False, label=f"Quick ({QUICK_EXAMPLES} examples, no 3-bit)")
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
    shown = gr.Markdown(elem_id="demo-gallery-summary")
    answers = gr.Dataframe(
        pd.DataFrame(columns=["prompt (last line)", "answer"]),
        label=f"Gallery: the first {GALLERY_SIZE} held-out prompts, each model's answer marked right or wrong",
        interactive=False,
        wrap=True,
        elem_id="demo-gallery",
    )
    return SimpleNamespace(
        shown=shown,
        answers=answers,
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
            packed_estimate(lm.model, bits, DEMO_RATIO if kind == "tacq" else 0.0, None)
            for bits, kind in specs
        )
        user.check_room(lm, need_bytes, f"the demo's {len(specs)} variants")
        n = QUICK_EXAMPLES if quick else FULL_EXAMPLES
        study = Study(lm, load_task(task_name), DataConfig(max_examples=n))
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
            yield msg, pd.DataFrame(d.timeline()), gr.update(), gr.update(), gr.update(), *keep
        # Only a finished demo changes the session: the examples (not saved over the
        # user's own), the study and the variants.
        user.task, user.study, user.fp_eval = study.task, study, None
        for v in demo.variants:
            user.add_variant(v, lm)
        user.last_eval = demo.results
        names = list(user.variants)
        tacq2 = next(v for v in demo.variants if v.spec.bits == 2 and v.spec.ratio > 0)
        gptq2 = next(v for v in demo.variants if v.spec.ratio == 0)
        lists = variant_choices(names, n_lists, tacq2.name, gptq2.name)
        table = results_table(demo.results)
        bpw = {v.name: v.size.bpw_honest for v in demo.variants}
        right = gallery_right(demo.results)
        shown = min(GALLERY_SIZE, len(demo.results[0].rows))
        said = ", ".join(f"{name} {k} of {shown}" for name, k in right.items())
        yield (
            f"Done in **{demo.elapsed_s:.0f} s** (expected {demo.expected_s:.0f} s). "
            "The **Chat** tab has a suggested prompt ready (press Send there).",
            pd.DataFrame(demo.timeline()),
            table,
            f"Right answers in the gallery: {said}.",
            gallery(demo.results, bpw),
            *lists,
            gr.update(value=suggested_prompt(study.task)),
            study.task.style,  # the chat sends the prompt as the gallery did (raw or chat)
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
        tab.shown,
        tab.answers,
        *variant_lists,
        chat.prompt,
        chat.style,
        *eval_tables,
        variants_table,
    ]
    event = tab.run.click(
        on_run,
        [user_state, tab.task, tab.quick],
        outs,
        concurrency_id=HEAVY,
        concurrency_limit=1,
        show_progress_on=[tab.status],  # one bar for the job, not one per output
    )
    tab.cancel.click(on_cancel, user_state, tab.status, cancels=[event], concurrency_limit=None)
