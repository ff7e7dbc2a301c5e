"""Find the smallest: auto-fit on the Quantize screen (tacq.study.autofit), its frontier and plot."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app.common import HEAVY, gradio_progress, handles_errors, need, variant_choices, whole
from app.figures import fit_figure
from app.state import UserState
from tacq.study.autofit import (
    FIT_BITS,
    FRONTIER_COLUMNS,
    candidates,
    check_bits,
    check_keep,
    fit,
)


def build() -> SimpleNamespace:
    with gr.Accordion("Find the smallest variant that keeps your task", open=True):
        gr.Markdown(
            "Tries the best-measured settings at 2, 3 and 4 bits, then more or fewer kept "
            "weights and scales per 128 inputs, smallest first, each scored on your **dev** "
            "examples; stops raising the bit width once one keeps the task. The choice is "
            "then scored once on held-out and kept as a variant. Minutes per candidate on a "
            "CPU; Cancel stops it."
        )
        with gr.Row():
            keep = gr.Slider(
                0.5, 1.0, value=0.9, step=0.05, label="Keep this share of the original's "
                "dev exact match", elem_id="fit-keep", scale=2,
            )  # fmt: skip
            bits = gr.CheckboxGroup(
                list(FIT_BITS), value=list(FIT_BITS), label="Bit widths", elem_id="fit-bits"
            )
            most = gr.Number(
                len(candidates()),
                label="At most this many candidates",
                precision=None,
                elem_id="fit-most",
            )
            go = gr.Button("Find the smallest", variant="primary", elem_id="fit-go")
        status = gr.Markdown(elem_id="fit-status")
        table = gr.Dataframe(
            pd.DataFrame(columns=list(FRONTIER_COLUMNS)),  # headers before a search, not 1 2 3
            label="Frontier (dev)",
            interactive=False,
            elem_id="fit-table",
        )
        plot = gr.Plot(label="Dev answer NLL and exact match against bits per weight",
                       elem_id="fit-plot")  # fmt: skip
    return SimpleNamespace(keep=keep, bits=bits, most=most, go=go, status=status, table=table,
                           plot=plot)  # fmt: skip


def wire(panel: SimpleNamespace, user_state: gr.State, variants_out: list, frame, n_lists: int):
    """variants_out: the Quantize screen's variants table and every variant list, which the
    chosen variant joins; frame(user): that table's value."""

    @handles_errors
    def on_fit(user: UserState, keep: float, bits: list, most: float, progress=gr.Progress()):
        study = need(user.study, "Choose examples first: auto-fit calibrates and chooses on them.")
        need(bits, "Tick at least one bit width to try.")
        n = whole(most, "At most this many candidates", minimum=1)
        keep, bits = check_keep(keep), check_bits(bits)  # before a job starts
        stop = user.jobs.start("quantize")  # the screen's Cancel button stops it
        result = fit(study, keep, bits, n, gradio_progress(progress, stop))
        if result.variant is not None:
            user.add_variant(result.variant, study.lm)
        figure = fit_figure(result)
        lists = variant_choices(list(user.variants), n_lists)
        return result.summary(), result.table(), figure, frame(user), *lists

    panel.go.click(
        on_fit,
        [user_state, panel.keep, panel.bits, panel.most],
        [panel.status, panel.table, panel.plot, *variants_out],
        concurrency_id=HEAVY,
        concurrency_limit=1,
        show_progress_on=[panel.status],
    )
