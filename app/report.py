"""A self-contained HTML report of one study: settings, circuit, sizes, eval and answers.

plotly.js is inlined once (no CDN, no network), so the file opens anywhere, offline.
"""

from __future__ import annotations

import html
import time

import pandas as pd

from app import figures
from app.state import UserState
from tacq.circuit.saliency import METRICS
from tacq.circuit.select import Selection, layer_table
from tacq.study.tables import last_line, results_table, variants_table

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left}th{background:#f4f4f4}h1{margin-bottom:0}.muted{color:#666}"""


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, na_rep="")


def _one_line(text: str, limit: int = 80) -> str:
    flat = " ⏎ ".join(x for x in text.strip().splitlines() if x.strip())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def build_report(user: UserState, metric: str, bits: int, pct: float) -> str:
    study = user.study
    if study is None:
        raise ValueError("no study")
    sel = Selection(metric, int(bits), pct / 100)
    ranking = study.cached_ranking(sel)
    parts = [
        f"<h1>TaCQ Studio report</h1><p class=muted>{time.strftime('%Y-%m-%d %H:%M')}</p>",
        "<h2>Settings</h2>",
        _table(
            pd.DataFrame(
                [
                    {"": "model", "value": study.lm.name},
                    {"": "task", "value": study.task.name},
                    {
                        "": "calibration / held-out examples",
                        "value": f"{len(study.calib_examples)} / {len(study.task.heldout)}",
                    },
                    {"": "saliency metric", "value": METRICS[metric].label},
                    {"": "outlier ratio", "value": f"{pct:.2f} %"},
                    {"": "bits", "value": str(bits)},
                ]
            )
        ),
    ]
    if ranking is not None:
        p = pct / 100
        table = layer_table(ranking, p)
        sizes = {b: study.size_at(sel.at(bits=b), ranking) for b in (2, 3, 4)}
        heat = figures.circuit_heatmap(table, f"{METRICS[metric].label} circuit, {pct:.2f}% kept")
        parts += [
            "<h2>Circuit</h2>",
            heat.to_html(full_html=False, include_plotlyjs=True),
            figures.layer_bars(table).to_html(full_html=False, include_plotlyjs=False),
            "<h2>Bits per weight and size</h2>",
            _table(figures.size_table(sizes)),
        ]
    else:
        parts.append("<p>No circuit shown yet for this metric and bit width.</p>")
    if user.variants:
        parts += [
            "<h2>Variants</h2>",
            _table(variants_table(list(user.variants.values()))),
        ]
    if user.last_eval is not None:
        results = user.last_eval
        parts += [
            "<h2>Held-out evaluation</h2>",
            _table(results_table(results)),
        ]
        answers = []
        for i, row in enumerate(results[0].rows[:6]):
            line = {
                "prompt (last line)": last_line(row["prompt"]),
                "answer": row["answer"].strip(),
            }
            line |= {r.name: _one_line(r.rows[i]["prediction"]) for r in results}
            answers.append(line)
        parts += ["<h2>Answers side by side</h2>", _table(pd.DataFrame(answers))]
    else:
        parts.append("<p>Not evaluated yet: press <i>Evaluate</i> before the report.</p>")
    body = "\n".join(parts)
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>TaCQ Studio report – "
        f"{html.escape(study.task.name)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
