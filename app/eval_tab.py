"""Evaluate and export: held-out table, what broke, and a download of a variant."""

from __future__ import annotations

import re
import shutil
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app.common import HEAVY, gradio_progress, handles_errors, need
from app.state import ModelRegistry, UserState
from tacq import export
from tacq.evaluate import evaluate
from tacq.progress import scaled


def _last_line(prompt: str) -> str:
    return prompt.strip().splitlines()[-1] if prompt.strip() else prompt


def build() -> SimpleNamespace:
    run = gr.Button("Evaluate all variants on the held-out examples", variant="primary")
    table = gr.Dataframe(label="Held-out results", interactive=False, elem_id="eval-table")
    broke = gr.Dataframe(
        label="What broke: the original model is right, the variant is wrong",
        interactive=False,
        wrap=True,
        elem_id="broke-table",
    )
    gr.Markdown("### Export")
    with gr.Row():
        which = gr.Dropdown([], label="Variant")
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
    return SimpleNamespace(
        run=run, table=table, broke=broke, which=which, fmt=fmt, go=go, status=status, file=file
    )


def wire(tab: SimpleNamespace, user_state: gr.State, registry: ModelRegistry) -> None:
    @handles_errors
    def on_eval(user: UserState, progress=gr.Progress()):
        study = need(user.study, "Choose examples first.")
        held = need(list(study.task.heldout), "This task has no held-out examples.")
        lm, style = study.lm, study.task.style
        user.stop.clear()
        hook = gradio_progress(progress, user.stop)
        n = len(user.variants) + 1
        if user.fp_eval is None or user.fp_eval[0] != study.digest():
            fp, lp = evaluate(
                lm.model, lm.tokenizer, held, style, "original", progress=scaled(hook, 0, 1 / n)
            )
            user.fp_eval = (study.digest(), fp, lp)
        _, fp, lp = user.fp_eval
        results = [fp]
        for i, v in enumerate(user.variants.values(), 1):
            r, _ = evaluate(
                v.model,
                lm.tokenizer,
                held,
                style,
                v.name,
                fp_logprobs=lp,
                progress=scaled(hook, i / n, (i + 1) / n),
            )
            results.append(r)
        rows = [
            {
                "variant": r.name,
                "answer NLL": round(r.answer_nll, 4),
                "exact match": round(r.exact_match, 3),
                "KL to original": None if r.kl_to_fp is None else round(r.kl_to_fp, 4),
                "held-out examples": len(r.rows),
            }
            for r in results
        ]
        broke = [
            {
                "variant": r.name,
                "prompt (last line)": _last_line(a["prompt"]),
                "answer": a["answer"].strip(),
                "original says": a["prediction"],
                "variant says": b["prediction"],
            }
            for r in results[1:]
            for a, b in zip(fp.rows, r.rows)
            if a["correct"] and not b["correct"]
        ]
        return pd.DataFrame(rows), pd.DataFrame(
            broke,
            columns=["variant", "prompt (last line)", "answer", "original says", "variant says"],
        )

    @handles_errors
    def on_export(user: UserState, name: str, fmt: str, progress=gr.Progress()):
        need(name, "Quantize a variant first, then pick it here.")
        v = need(user.variants.get(name), f"No variant named {name}.")
        lm = registry.get(user.model_key)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{v.name}-{fmt}")[:80]
        out = user.folder / "exports" / safe
        progress(0.2, desc="writing")
        (export.save_packed if fmt == "packed" else export.save_dequantized)(out, lm, v)
        size = export.folder_bytes(out)
        zip_path = shutil.make_archive(str(out), "zip", root_dir=out)
        return (
            f"Wrote **{safe}** ({size / 2**20:.1f} MB; model {v.size.total_bytes / 2**20:.1f}"
            f" MB by the size report)."
            if fmt == "packed"
            else f"Wrote **{safe}** ({size / 2**20:.1f} MB of fp16 weights)."
        ), zip_path

    tab.run.click(
        on_eval, user_state, [tab.table, tab.broke], concurrency_id=HEAVY, concurrency_limit=1
    )
    tab.go.click(
        on_export,
        [user_state, tab.which, tab.fmt],
        [tab.status, tab.file],
        concurrency_id=HEAVY,
        concurrency_limit=1,
    )
