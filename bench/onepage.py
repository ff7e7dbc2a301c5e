"""The one-page bench/README.md: which recipe to use at each bit width, how it stands
against the peers at matched bits, and one verdict line per target.

Why a page of its own: the full tables and every paired finding run to thousands of
lines (the appendices, bench/results/*.md); a reader wants "which recipe at 2 and 3 bits,
and how sure are we" in under a minute. Everything here is read from bench/results/*.json
by the same functions the appendices use.
"""

from __future__ import annotations

import statistics

from findings import (
    Results,
    circuit_causal,
    demo,
    label,
    large_models,
    matched_bits,
    matched_bits_fresh,
    matched_bits_seeds,
    one_task_time,
    packed_memory,
    preset_pick,
    quality_targets,
    scaling,
    scaling_open,
    speed,
)
from quality import paired_rows, parse_method

from tacq.quant.recipe import Recipe

LINES_MAX = 150  # the page's length limit (a test holds it)


def recipe_table(res: Results) -> list[str]:
    """The Quantize screen's "best measured" preset at 2, 3 and 4 bits, with what it scored
    on the held-out splits of the tasks it was measured on."""
    q = res.get("quality")
    rows = q["rows"] if q else []
    out = [
        "| bits | recipe | key | honest BPW | tasks | held-out exact match kept of fp: "
        "median (range) | answer NLL over fp, mean | how it was chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for bits in (2, 3, 4):
        recipe = Recipe.preset("measured", bits)
        key = recipe.key()
        here = [r for r in rows if (r["bits"], r["method"], r.get("seed", 0)) == (bits, key, 0)]
        fps = {r["task"]: r for r in rows if (r["bits"], r["method"]) == (bits, "fp")}
        here = [r for r in here if r["task"] in fps]
        pick = preset_pick(rows, bits)
        how = (
            f"lowest mean rank of dev answer NLL ({pick[1][pick[0]]:.2f}) of {len(pick[1])} "
            "settings scored on every task"
            if pick and pick[0] == key
            else "the paper's settings: no lever was measured on every task"
        )
        if not here:
            out.append(f"| {bits} | {recipe.describe()} | `{key}` | - | 0 | - | - | {how} |")
            continue
        kept = [r["exact_match"] / fps[r["task"]]["exact_match"] for r in here]
        over = statistics.mean(r["answer_nll"] / fps[r["task"]]["answer_nll"] - 1 for r in here)
        bpw = statistics.median(r["bpw_honest"] for r in here)
        out.append(
            f"| {bits} | {recipe.describe()} | `{key}` | {bpw:.3f} | {len(here)} | "
            f"{statistics.median(kept):.0%} ({min(kept):.0%}-{max(kept):.0%}) | "
            f"{over:+.0%} | {how} |"
        )
    return out


def matched_table(res: Results) -> list[str]:
    """Per task and bit width: the strongest peer point (lowest held-out answer NLL) against
    the TaCQ point picked on dev among those at or below its honest BPW, paired on the same
    held-out examples. The appendix has every peer point."""
    q, pe = res.get("quality"), res.get("peers")
    if not q or not pe:
        return []
    peers = [r for r in pe["rows"] if "error" not in r and "nll_each" in r]
    out = [
        "| task | bits | strongest peer: BPW, NLL, EM | TaCQ picked on dev: BPW, NLL, EM | "
        "NLL TaCQ - peer [95 %] | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for task, bits in sorted({(r["task"], r["bits"]) for r in peers}):
        rivals = [r for r in peers if (r["task"], r["bits"]) == (task, bits)]
        p = min(rivals, key=lambda r: r["answer_nll"])
        fit = [
            r
            for r in q["rows"]
            if (r["task"], r["bits"], r.get("seed", 0)) == (task, bits, 0)
            and parse_method(r["method"])[0] == "tacq"
            and r.get("heldout_examples") == p["heldout_examples"]
            and "nll_each" in r
            and "dev" in r
            and r["bpw_honest"] <= p["bpw_honest"]
        ]
        peer = (
            f"{p['method']}: {p['bpw_honest']:.3f}, {p['answer_nll']:.3f}, {p['exact_match']:.2f}"
        )
        if not fit:
            out.append(f"| {task} | {bits} | {peer} | none scored on dev at this BPW | | no |")
            continue
        t = min(fit, key=lambda r: r["dev"]["answer_nll"])
        d = paired_rows(t, p)
        verdict = {t["method"]: "TaCQ", p["method"]: "peer"}.get(d.better, "undecided")
        out.append(
            f"| {task} | {bits} | {peer} | {label(t['method'])}: {t['bpw_honest']:.3f}, "
            f"{t['answer_nll']:.3f}, {t['exact_match']:.2f} | {d.nll.mean:+.3f} "
            f"{d.nll.text()} | {verdict} |"
        )
    return out


def verdicts(res: Results) -> list[str]:
    """One line per target, met or not (the appendix findings.md has the open points too)."""
    quality = quality_targets(res)
    lines = quality[:1] + [x for x in quality if "gap TaCQ closes" in x]
    lines += matched_bits(res) + matched_bits_seeds(res) + matched_bits_fresh(res)
    for f in (one_task_time, circuit_causal, packed_memory, demo, speed, scaling, scaling_open):
        lines += f(res)
    lines += fit_verdict(res)
    lines += large_models(res)
    return lines


def fit_verdict(res: Results) -> list[str]:
    """Auto-fit: on how many tasks it was measured, the time target, what it chose."""
    fit = res.get("fit")
    if not fit:
        return []
    rows = fit["rows"]
    chosen = [
        f"{r['task']} {r['chosen_bits']}-bit {r['chosen_bpw']:.2f} BPW "
        f"(held-out EM {r['heldout']['em_kept']:.0%} of fp)"
        for r in rows
        if r["chosen"]
    ]
    none = [r["task"] for r in rows if not r["chosen"]]
    slow = [f"{r['task']} {r['wall_s'] / 60:.1f} min" for r in rows if not r["meets_time_target"]]
    return [
        f"- Auto-fit (`python -m tacq fit --keep {fit['keep']}`, cold caches): the smallest "
        f"variant keeping {fit['keep']:.0%} of fp's dev exact match on {len(rows)} tasks: "
        + "; ".join(chosen or ["none"])
        + (f"; none qualifies on {', '.join(none)}" if none else "")
        + f". Under {fit['target_min']} min on "
        f"{len(rows) - len(slow)} of {len(rows)}"
        + (f" (over: {', '.join(slow)})." if slow else ".")
    ]


def page(res: Results, head: str, appendices: list[tuple[str, str]]) -> str:
    """The whole page: head (title, scripts), recipes, matched bits, the Pareto plot,
    verdicts, then the appendices' index."""
    out = [head, "## Which recipe at 2, 3 and 4 bits", ""]
    out += [
        "The Quantize screen's and `tacq quantize`'s default (`Recipe.preset(\"measured\", "
        "bits)`), picked on the tasks' dev splits by a written rule and scored on held-out.",
        "",
        *recipe_table(res),
        "",
    ]
    matched = matched_table(res)
    if matched:
        out += ["## Matched bits against AutoRound and HQQ (held-out, paired)", "", *matched, ""]
        out += [
            "![Held-out answer NLL against honest BPW](results/pareto.png)",
            "",
        ]
    out += ["## Verdicts, one per target", "", *verdicts(res), "", "## Appendices", ""]
    out += [f"- [{title}](results/{name}.md)" for name, title in appendices]
    return "\n".join(out) + "\n"
