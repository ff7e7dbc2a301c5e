"""The Circuit screen's checks of a circuit: the causal test, its stability across samples,
halves, scores or tasks, and its overlap with another task's circuit."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from app import figures
from app.common import HEAVY, cancel_handler, gradio_progress, handles_errors, need, whole
from app.state import UserState
from tacq.circuit.causal import CausalConfig, causal_test
from tacq.circuit.saliency import METRICS
from tacq.circuit.select import Selection, layer_jaccard
from tacq.circuit.stability import stability
from tacq.data.reading import load_task
from tacq.data.tasks import list_tasks

CAUSAL_HELP = (
    "Only the circuit's weights are damaged (rounded to their row's b-bit grid, or zeroed); "
    "everything else stays at full precision. If the task's answers get much worse while a "
    "random set of the same size (same count in each module) and the control task barely "
    "move, the circuit carries the task; if the control task breaks as much, these weights "
    "matter to the model as a whole, not to this task."
)

STABILITY_HELP = (
    "Each calibration sample, half or task gets its own gradients (and, for scores that "
    "read dW, its own reference quantization; cached for next time), then the kept sets at "
    "this ratio are compared by Jaccard overlap. Chance is what two random sets of the "
    "same sizes in each module would share."
)


def build_checks() -> dict:
    """The three checks' controls, each in an accordion (names as the screen's namespace)."""
    with gr.Accordion("Causal test: damage only the circuit", open=False):
        gr.Markdown(CAUSAL_HELP)
        with gr.Row():
            control = gr.Dropdown(
                list(list_tasks()), value="capitals", label="Control task", elem_id="causal-control"
            )
            damage = gr.Radio(
                [("round to the b-bit grid", "round"), ("set to zero", "zero")],
                value="round",
                label="Damage",
                elem_id="causal-damage",
            )
            scored = gr.Number(
                value=CausalConfig.task_examples,
                minimum=1,
                label="Held-out examples scored (task and control)",
                elem_id="causal-scored",
            )
            seeds = gr.Number(
                value=CausalConfig.seeds,
                minimum=1,
                maximum=10,
                label="Random controls (seeds)",
                elem_id="causal-seeds",
            )
        with gr.Row():
            causal = gr.Button("Run causal test")
            causal_cancel = gr.Button("Cancel", variant="stop")
        causal_summary = gr.Markdown(elem_id="causal-summary")
        causal_table = gr.Dataframe(interactive=False, elem_id="causal-table")
        causal_plot = gr.Plot(elem_id="causal-plot")
    with gr.Accordion("Stability: would other examples give the same circuit?", open=False):
        gr.Markdown(STABILITY_HELP)
        with gr.Row():
            across = gr.Radio(
                [
                    ("two halves of the examples", "halves"),
                    ("3 calibration samples (seeds)", "seeds"),
                    ("TaCQ, QAL, MSG and |W|", "metrics"),
                    ("every bundled task", "tasks"),
                ],
                value="halves",
                label="Compare circuits across",
                elem_id="stability-across",
            )
            stab_go = gr.Button("Compare circuits", elem_id="stability-go")
            stab_cancel = gr.Button("Cancel", variant="stop")
        stab_summary = gr.Markdown(elem_id="stability-summary")
        stab_plot = gr.Plot(elem_id="stability-plot")
        stab_table = gr.Dataframe(interactive=False, elem_id="stability-table")
        stab_shared = gr.Dataframe(
            label="Shared and specific: weights every circuit keeps, weights only one keeps",
            interactive=False,
            elem_id="stability-shared",
        )
    with gr.Accordion("Compare with another task", open=False):
        with gr.Row():
            other = gr.Dropdown(list(list_tasks()), label="Other bundled task")
            compare = gr.Button("Compare circuits")
        overlap = gr.Markdown()
        overlap_plot = gr.Plot(elem_id="overlap-plot")
    return dict(
        control=control,
        damage=damage,
        scored=scored,
        seeds=seeds,
        causal=causal,
        causal_cancel=causal_cancel,
        causal_summary=causal_summary,
        causal_table=causal_table,
        causal_plot=causal_plot,
        across=across,
        stab_go=stab_go,
        stab_cancel=stab_cancel,
        stab_summary=stab_summary,
        stab_plot=stab_plot,
        stab_table=stab_table,
        stab_shared=stab_shared,
        other=other,
        compare=compare,
        overlap=overlap,
        overlap_plot=overlap_plot,
    )


def wire_checks(tab: SimpleNamespace, user_state: gr.State) -> None:
    """Wire the causal test, stability and task-overlap buttons (each a cancellable job)."""

    @handles_errors
    def on_causal(
        user: UserState,
        metric: str,
        bits: int,
        pct: float,
        control: str,
        damage: str,
        scored: float,
        seeds: float,
        progress=gr.Progress(),
    ):
        study = need(user.study, "Choose examples and collect gradients first.")
        need(control, "Pick a control task.")
        n = whole(need(scored, "Say how many held-out examples to score."), "Examples scored", 1)
        n_seeds = whole(need(seeds, "Say how many random seeds."), "Random controls", 1)
        cfg = CausalConfig(damage, n_seeds, n, n)
        hook = gradio_progress(progress, user.jobs.start("causal"))
        sel = Selection(metric, int(bits), pct / 100)
        res = causal_test(study, sel, control, cfg, hook)
        shown = res.table.round(4)
        return res.summary(), shown, figures.causal_bars(res.table, study.task.name, control)

    on_causal_cancel = cancel_handler("causal")

    @handles_errors
    def on_stability(
        user: UserState, metric: str, bits: int, pct: float, across: str, progress=gr.Progress()
    ):
        study = need(user.study, "Choose examples and collect gradients first.")
        hook = gradio_progress(progress, user.jobs.start("stability"))
        res = stability(study, Selection(metric, int(bits), pct / 100), across, progress=hook)
        title = f"{METRICS[metric].label if across != 'metrics' else 'Scores'} at {pct:.2f}%"
        fig = figures.stability_figure(res.matrix, res.layers, title)
        return res.summary(), fig, res.pairs().round(4), res.shared

    on_stability_cancel = cancel_handler("stability")

    @handles_errors
    def on_compare(
        user: UserState, metric: str, bits: int, pct: float, other: str, progress=gr.Progress()
    ):
        study = need(user.study, "Choose examples and collect gradients first.")
        need(other, "Pick the other task.")
        hook = gradio_progress(progress, user.jobs.start("circuit"))
        sel = Selection(metric, int(bits), pct / 100)
        theirs = study.for_task(load_task(other))
        theirs.collect(hook)
        table = layer_jaccard(
            study.ranking(sel, hook).masks(sel.ratio), theirs.ranking(sel, hook).masks(sel.ratio)
        )
        both, either = table["kept in both"].sum(), table["kept in either"].sum()
        msg = (
            f"**{study.task.name}** vs **{other}** at {pct:.2f}% ({METRICS[metric].label}): "
            f"{both:,} weights kept by both of {either:,} kept by either "
            f"(Jaccard {both / max(either, 1):.3f})."
        )
        return msg, figures.overlap_figure(
            table["layer"].tolist(), table["jaccard"].tolist(), study.task.name, other
        )

    tab.causal.click(
        on_causal,
        [
            user_state,
            tab.metric,
            tab.bits,
            tab.ratio,
            tab.control,
            tab.damage,
            tab.scored,
            tab.seeds,
        ],
        [tab.causal_summary, tab.causal_table, tab.causal_plot],
        show_progress_on=[tab.causal_summary],
        concurrency_id=HEAVY,
        concurrency_limit=1,
    )
    tab.causal_cancel.click(
        on_causal_cancel, user_state, tab.causal_summary, concurrency_limit=None
    )
    tab.stab_go.click(
        on_stability,
        [user_state, tab.metric, tab.bits, tab.ratio, tab.across],
        [tab.stab_summary, tab.stab_plot, tab.stab_table, tab.stab_shared],
        show_progress_on=[tab.stab_summary],
        concurrency_id=HEAVY,
        concurrency_limit=1,
    )
    tab.stab_cancel.click(on_stability_cancel, user_state, tab.stab_summary, concurrency_limit=None)
    tab.compare.click(
        on_compare,
        [user_state, tab.metric, tab.bits, tab.ratio, tab.other],
        [tab.overlap, tab.overlap_plot],
        show_progress_on=[tab.overlap],
        concurrency_id=HEAVY,
        concurrency_limit=1,
    )
