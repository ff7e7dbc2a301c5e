"""The tables every front end shows: held-out results, what broke, and the variants.

One builder each, so the CLI, the app, the HTML report and the demo print the same
columns under the same headers.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from tacq.eval.evaluate import EvalResult
from tacq.eval.stats import intervals
from tacq.quant.variant import Variant

RESULT_COLUMNS = [
    "variant",
    "answer NLL",
    "NLL 95 % interval",
    "exact match",
    "EM 95 % interval",
    "KL to original",
    "held-out examples",
]
BROKE_COLUMNS = ["variant", "prompt (last line)", "answer", "original says", "variant says"]
VARIANT_COLUMNS = [
    "variant",
    "bits",
    "group",
    "kept %",
    "BPW (paper)",
    "BPW (honest)",
    "file MB",
    "own memory MB",
    "seconds",
    "made by",
]


def results_table(results: Sequence[EvalResult]) -> pd.DataFrame:
    """Held-out results, original first: NLL to 4 places, exact match to 3, KL to 4, and
    the 95 % bootstrap interval of each mean (what these examples can decide)."""
    rows = []
    for r in results:
        nll, em = intervals(r)
        rows.append(
            {
                "variant": r.name,
                "answer NLL": round(r.answer_nll, 4),
                "NLL 95 % interval": nll.text(),
                "exact match": round(r.exact_match, 3),
                "EM 95 % interval": em.text(),
                "KL to original": None if r.kl_to_fp is None else round(r.kl_to_fp, 4),
                "held-out examples": len(r.rows),
            }
        )
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def last_line(prompt: str) -> str:
    return prompt.strip().splitlines()[-1] if prompt.strip() else prompt


def what_broke(results: Sequence[EvalResult]) -> pd.DataFrame:
    """Held-out prompts the original (results[0]) answers right and a variant gets wrong."""
    original = results[0]
    rows = [
        {
            "variant": r.name,
            "prompt (last line)": last_line(a["prompt"]),
            "answer": a["answer"].strip(),
            "original says": a["prediction"],
            "variant says": b["prediction"],
        }
        for r in results[1:]
        for a, b in zip(original.rows, r.rows)
        if a["correct"] and not b["correct"]
    ]
    return pd.DataFrame(rows, columns=BROKE_COLUMNS)


def variants_table(variants: Sequence[Variant]) -> pd.DataFrame:
    """One row per variant: bits, kept share, paper BPW, packed size on disk, what it holds
    in memory beyond the shared original, time to make."""
    rows = [
        {
            "variant": v.name,
            "bits": v.spec.bits,
            "group": v.spec.group_size or "row",
            "kept %": round(100 * v.size.ratio, 3),
            "BPW (paper)": round(v.size.bpw_paper, 4),
            "BPW (honest)": round(v.size.bpw_honest, 3),
            "file MB": round(v.size.total_bytes / 2**20, 1),
            "own memory MB": round(v.resident_bytes / 2**20, 1),
            "seconds": round(v.result.seconds, 1),
            "made by": v.peer["package"] if v.peer else "TaCQ Studio",
        }
        for v in variants
    ]
    return pd.DataFrame(rows, columns=VARIANT_COLUMNS)


GALLERY_SIZE = 10  # held-out prompts the demo's gallery shows


def model_label(name: str) -> str:
    """A column title that says what a variant is: GPTQ without a group is per channel."""
    if name.startswith(("gptq-", "rtn-")) and "-g" not in name:
        return f"{name} (per channel)"
    return name


def gallery(
    results: Sequence[EvalResult], bpw: dict[str, float] | None = None, n: int = GALLERY_SIZE
) -> pd.DataFrame:
    """The first n held-out prompts (not picked: the first of the split) with every
    model's answer, marked right or wrong, original first: the difference at a glance.
    bpw: honest bits per weight by variant name, shown in its column title."""
    bpw = bpw or {}
    first = results[0].rows[:n]
    table = {
        "prompt (last line)": [last_line(a["prompt"]) for a in first],
        "answer": [a["answer"].strip() for a in first],
    }
    for r in results:
        title = model_label(r.name) + (f" · {bpw[r.name]:.2f} BPW" if r.name in bpw else "")
        table[title] = [
            f"{'✓' if a['correct'] else '✗'} {a['prediction'] or '(nothing)'}" for a in r.rows[:n]
        ]
    return pd.DataFrame(table)


def gallery_right(results: Sequence[EvalResult], n: int = GALLERY_SIZE) -> dict[str, int]:
    """name -> how many of the gallery's prompts the model answers right."""
    return {r.name: sum(a["correct"] for a in r.rows[:n]) for r in results}
