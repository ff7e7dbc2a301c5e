"""A self-contained HTML report of one study: settings, circuit, sizes, eval and answers.

plotly.js is inlined once (no CDN, no network), so the file opens anywhere, offline.
"""

from __future__ import annotations

import html
import time

import pandas as pd

from app import figures
from app.state import UserState
from tacq.saliency import METRICS
from tacq.select import layer_table

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
    ranking = study.cached_ranking(metric, int(bits))
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
                    {"": "saliency metric", "value": METRICS[metric]},
                    {"": "outlier ratio", "value": f"{pct:.2f} %"},
                    {"": "bits", "value": str(bits)},
                ]
            )
        ),
    ]
    if ranking is not None:
        p = pct / 100
        table = layer_table(ranking, p)
        sizes = {b: study.size_at(ranking, p, b) for b in (2, 3, 4)}
        heat = figures.circuit_heatmap(table, f"{METRICS[metric]} circuit, {pct:.2f}% kept")
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
            _table(
                pd.DataFrame(
                    [
                        {
                            "variant": v.name,
                            "BPW (paper)": round(v.size.bpw_paper, 4),
                            "size MB": round(v.size.total_bytes / 2**20, 1),
                        }
                        for v in user.variants.values()
                    ]
                )
            ),
        ]
    if user.last_eval is not None:
        results = user.last_eval
        parts += [
            "<h2>Held-out evaluation</h2>",
            _table(
                pd.DataFrame(
                    [
                        {
                            "variant": r.name,
                            "answer NLL": round(r.answer_nll, 4),
                            "exact match": round(r.exact_match, 3),
                            "KL to original": None if r.kl_to_fp is None else round(r.kl_to_fp, 4),
                        }
                        for r in results
                    ]
                )
            ),
        ]
        answers = []
        for i, row in enumerate(results[0].rows[:6]):
            line = {
                "prompt (last line)": row["prompt"].strip().splitlines()[-1],
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
