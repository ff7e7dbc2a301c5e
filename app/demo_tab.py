"""One-click demo: the whole loop on a bundled task, a stage timeline, then a gallery of
answers and the chat with a suggested prompt."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app.common import HEAVY, cancel_handler, gradio_progress, handles_errors, variant_choices
from app.quantize_tab import variants_frame
from app.state import ModelRegistry, UserState
from tacq.data.reading import load_task
from tacq.data.tasks import DataConfig, list_tasks
from tacq.memory import packed_estimate
from tacq.study.demo import (
    DEMO_HELDOUT,
    DEMO_TASK,
    FULL_EXAMPLES,
    QUICK_EXAMPLES,
    QUICK_GPTQ,
    demo_recipe,
    demo_recipes,
    plan_demo,
    run_demo,
    suggested_prompt,
)
from tacq.study.tables import (
    GALLERY_SIZE,
    RESULT_COLUMNS,
    gallery,
    gallery_right,
    model_label,
    results_table,
)
from tacq.study.workflow import Study

_QUICK_GPTQ = " and ".join(model_label(r.name) for r in QUICK_GPTQ)
INTRO = f"""### One-click demo
Runs the whole loop on the bundled model and a bundled task: collect gradients, quantize
**TaCQ 3-bit** and **TaCQ 2-bit** ({demo_recipe(2).describe()}) and two **GPTQ 2-bit**
baselines with nothing kept: per channel, and with scales per 128 inputs (g128, what
practitioners run at 2 bits); evaluate all on {DEMO_HELDOUT} held-out examples and show a
gallery of their answers, each titled with its honest bits per weight. The side-by-side
chat then has a suggested prompt ready (TaCQ 2-bit next to GPTQ 2-bit g128; pick any
variant per column). The default task and TaCQ settings are where 2-bit TaCQ beats GPTQ
most on the tasks' dev examples (`bench/demo_pick.py`). *Quick* uses {QUICK_EXAMPLES}
examples instead of {FULL_EXAMPLES}, skips the 3-bit variant and makes {_QUICK_GPTQ}
only (both baselines do not fit its 3 minutes on a 2-core CPU: `bench/demo_time.py`)."""


def build() -> SimpleNamespace:
    gr.Markdown(INTRO)
    with gr.Row():
        task = gr.Dropdown(list(list_tasks()), value=DEMO_TASK, label="Bundled task")
        quick = gr.Checkbox(
            False, label=f"Quick ({QUICK_EXAMPLES} examples, no 3-bit, {_QUICK_GPTQ} only)"
        )
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
        recipes = demo_recipes(quick)
        need_bytes = sum(
            packed_estimate(lm.model, r.bits, r.ratio, r.group_size, r.rotation) for r in recipes
        )
        user.check_room(lm, need_bytes, f"the demo's {len(recipes)} variants")
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
        gptq2 = next(v for v in reversed(demo.variants) if v.spec.ratio == 0)  # g128
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
