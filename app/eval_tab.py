"""Evaluate and export: held-out table, what broke, and a download of a variant."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app import figures
from app.common import HEAVY, gradio_progress, handles_errors, need, whole
from app.report import build_report
from app.state import ModelRegistry, UserState, safe_name
from tacq.eval.evaluate import evaluate_variants
from tacq.eval.stats import intervals, paired_table
from tacq.formats import export
from tacq.study.tables import RESULT_COLUMNS, results_table, what_broke


def _download_dir() -> Path:
    """A fresh folder under the system temp dir: where Gradio serves downloads from."""
    return Path(tempfile.mkdtemp(prefix="tacq-download-"))


def pareto(user: UserState, results: list) -> object:
    """The evaluated variants as points of NLL against honest BPW (the original as a line)."""
    rows = []
    for r in results[1:]:
        v = user.variants.get(r.name)
        if v is None:
            continue
        nll, _ = intervals(r)
        rows.append(
            {
                "name": r.name,
                "bpw": v.size.bpw_honest,
                "nll": r.answer_nll,
                "low": nll.low,
                "high": nll.high,
                "by": v.peer["package"] if v.peer else "TaCQ Studio",
            }
        )
    points = pd.DataFrame(rows, columns=["name", "bpw", "nll", "low", "high", "by"])
    title = f"{len(rows)} variant(s) on {len(results[0].rows)} held-out examples"
    return figures.pareto_figure(points, results[0].answer_nll, title)


def build() -> SimpleNamespace:
    with gr.Row():
        run = gr.Button(
            "Evaluate all variants on the held-out examples", variant="primary", scale=3
        )
        limit = gr.Number(
            0,
            minimum=0,
            label="Held-out examples to score (0 = all)",
            info="the first N: the same fixed subset for every model",
            elem_id="eval-limit",
            scale=1,
        )
    table = gr.Dataframe(
        pd.DataFrame(columns=RESULT_COLUMNS),
        label="Held-out results",
        interactive=False,
        elem_id="eval-table",
    )
    broke = gr.Dataframe(
        label="What broke: the original model is right, the variant is wrong",
        interactive=False,
        wrap=True,
        elem_id="broke-table",
    )
    paired = gr.Dataframe(
        label="Paired: each pair of variants on the same examples (A - B; negative NLL: A "
        "better; 'decided' when the 95 % interval excludes zero)",
        interactive=False,
        elem_id="paired-table",
    )
    pareto = gr.Plot(label="Answer NLL against bits per weight", elem_id="pareto-plot")
    gr.Markdown("### Export")
    with gr.Row():
        which = gr.Dropdown([], label="Variant", elem_id="export-variant")
        fmt = gr.Radio(
            [
                ("packed TaCQ (small; tacq.load_quantized)", "packed"),
                ("dequantized fp16 (any tool; no size win)", "dequantized"),
            ],
            value="packed",
            label="Format",
        )
        go = gr.Button("Export")
    status = gr.Markdown(elem_id="export-status")
    file = gr.File(label="Download", interactive=False)
    gr.Markdown("### Report")
    report = gr.Button("Download an HTML report (self-contained, opens offline)")
    report_file = gr.File(label="Report", interactive=False, elem_id="report-file")
    return SimpleNamespace(
        run=run,
        limit=limit,
        table=table,
        paired=paired,
        pareto=pareto,
        broke=broke,
        which=which,
        fmt=fmt,
        go=go,
        status=status,
        file=file,
        report=report,
        report_file=report_file,
    )


def wire(
    tab: SimpleNamespace,
    user_state: gr.State,
    registry: ModelRegistry,
    circuit: list,
    also: list,
) -> None:
    """circuit: the circuit tab's metric, bits and ratio inputs (what the report shows);
    also: other tables that show the held-out results (the chat tab's)."""

    @handles_errors
    def on_report(user: UserState, metric: str, bits: int, pct: float):
        need(user.study, "Choose examples and collect gradients first.")
        safe = safe_name(user.study.task.name)
        path = _download_dir() / f"tacq-report-{safe}.html"
        path.write_text(build_report(user, metric, int(bits), float(pct)), encoding="utf-8")
        return str(path)

    tab.report.click(on_report, [user_state, *circuit], tab.report_file)

    @handles_errors
    def on_eval(user: UserState, limit: float | None, progress=gr.Progress()):
        study = need(user.study, "Choose examples first.")
        need(list(study.task.heldout), "This task has no held-out examples.")
        n = whole(limit or 0, "Held-out examples to score") or None  # 0 or blank: all
        hook = gradio_progress(progress, user.jobs.start("eval"))
        key = (study.digest(), n)
        cached = user.fp_eval[1:] if user.fp_eval and user.fp_eval[0] == key else None
        results, fp_pair = evaluate_variants(
            study.lm, study.task, list(user.variants.values()), cached, hook, n
        )
        user.fp_eval = (key, *fp_pair)
        user.last_eval = results
        rows = results_table(results)
        fig = pareto(user, results)
        return rows, what_broke(results), paired_table(results), fig, *[rows] * len(also)

    @handles_errors
    def on_export(user: UserState, name: str, fmt: str, progress=gr.Progress()):
        need(name, "Quantize a variant first, then pick it here.")
        v = need(user.variants.get(name), f"No variant named {name}.")
        lm = registry.get(user.model_key)
        safe = safe_name(f"{v.name}-{fmt}")
        out = user.folder / "exports" / safe
        progress(0.2, desc="writing")
        (export.save_packed if fmt == "packed" else export.save_dequantized)(out, lm, v)
        size = export.folder_bytes(out)
        zip_path = shutil.make_archive(str(_download_dir() / safe), "zip", root_dir=out)
        return (
            f"Wrote **{safe}** ({size / 2**20:.1f} MB; model {v.size.total_bytes / 2**20:.1f}"
            f" MB by the size report)."
            if fmt == "packed"
            else f"Wrote **{safe}** ({size / 2**20:.1f} MB of fp16 weights)."
        ), zip_path

    tab.run.click(
        on_eval,
        [user_state, tab.limit],
        [tab.table, tab.broke, tab.paired, tab.pareto, *also],
        concurrency_id=HEAVY,
        concurrency_limit=1,
        show_progress_on=[tab.table],
    )
    tab.go.click(
        on_export,
        [user_state, tab.which, tab.fmt],
        [tab.status, tab.file],
        concurrency_id=HEAVY,
        concurrency_limit=1,
        show_progress_on=[tab.status],
    )
