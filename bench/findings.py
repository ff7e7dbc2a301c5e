"""'What the numbers say' of bench/README.md, computed from bench/results/*.json.

Every figure in a finding is read or derived here from a result file; the prose around
the figures is fixed. A finding whose results are missing is left out, so the README can
never state a number that no committed result holds.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from demo_pick import recipe_key
from quality import (
    ROTATED,
    method_order,
    paired_rows,
    parse_method,
    preset_of,
    recipe_of,
    rotated,
    rotation_kind,
    rounding_checked,
    split_damp,
    split_distill,
    split_rounding,
    unchecked,
    unclipped,
    undistilled,
    unrotated,
    unrounded,
)

from tacq.circuit.saliency import METRICS, metrics_in
from tacq.data.tasks import list_tasks
from tacq.formats.grid import GROUP_SIZES
from tacq.quant.recipe import Recipe
from tacq.study.runs import PLAIN_METHODS

GROUPED = [f"{m}_g{g}" for m in PLAIN_METHODS for g in GROUP_SIZES]  # group-wise RTN / GPTQ
BASELINES = [*PLAIN_METHODS, *GROUPED, *metrics_in("baseline")]  # what TaCQ must beat
# Short names: "TaCQ", "MSG", "SpQR-like", ... (the label up to its formula)
LABEL = {"rtn": "RTN", "gptq": "GPTQ"} | {m: METRICS[m].label.split(" ")[0] for m in METRICS}
LABEL |= {f"{m}_g{g}": f"{LABEL[m]} g{g}" for m in LABEL for g in GROUP_SIZES}


def label(method: str) -> str:
    """'TaCQ', 'GPTQ g128', 'TaCQ 0.20 % damp 0.1': a method's short name with its group,
    ratio and GPTQ damping."""
    base, group, ratio = parse_method(method)
    out = LABEL.get(base, base) + (f" g{group}" if group else "")
    damp, steps = split_damp(method)[1], split_rounding(method)[1]
    out += (f" {100 * ratio:.2f} %" if ratio else "") + (f" damp {damp:g}" if damp else "")
    checked = " checked" if rounding_checked(method) else ""
    clip = " + clip" if getattr(recipe_of(method), "rounding_clip", False) else ""
    out += f" rounding {steps}{checked}{clip}" if steps else ""
    epochs = split_distill(method)[1]
    out += f" distilled {epochs}" if epochs else ""
    kind = rotation_kind(method)
    return out + ("" if kind is None else " rotated" + (" (Hadamard)" if kind != "haar" else ""))


Results = dict[str, dict]  # topic -> the parsed JSON of bench/results/<topic>.json


def _row(rows: list[dict], task: str, bits: int, method: str) -> dict | None:
    """The default-calibration (seed 0) row of one task, bit width and method."""
    want = (task, bits, method, 0)
    return next(
        (r for r in rows if (r["task"], r["bits"], r["method"], r.get("seed", 0)) == want), None
    )


def _nll(rows: list[dict], task: str, bits: int, method: str) -> float | None:
    row = _row(rows, task, bits, method)
    return None if row is None else row["answer_nll"]


def _samples(rows: list[dict], task: str, bits: int, method: str) -> list[float]:
    """Held-out NLL of every calibration sample (seed) of one task, bit width and method."""
    return [
        r["answer_nll"] for r in rows if (r["task"], r["bits"], r["method"]) == (task, bits, method)
    ]


def quality_targets(res: Results) -> list[str]:
    q = res.get("quality")
    if not q:
        return []
    rows = q["rows"]
    tasks = sorted({r["task"] for r in rows if _nll(rows, r["task"], 2, "tacq") is not None})
    beats, best_of_all, gaps = [], [], []
    for t in tasks:
        tacq = _nll(rows, t, 2, "tacq")
        every = {
            r["method"]: r["answer_nll"]
            for r in rows
            if (r["task"], r["bits"], r.get("seed", 0)) == (t, 2, 0)
            and parse_method(r["method"])[0] not in ("fp", "tacq")
        }
        base = {m: v for m, v in every.items() if m in BASELINES}
        if base and tacq < min(base.values()):
            beats.append(t)
        if every and tacq < min(every.values()):
            best_of_all.append(t)
        gap = _row(rows, t, 2, "tacq").get("gap_closed")
        if gap is not None:
            gaps.append(f"{gap:.0%} ({t})")
    measured = {r["method"] for r in rows if r["bits"] == 2}
    named = [LABEL[m] for m in BASELINES if m in measured]
    out = [
        f"- At 2 bits TaCQ beats every baseline measured ({', '.join(named)}) on "
        f"held-out answer NLL on {len(beats)} of {len(tasks)} tasks"
        + (f" ({', '.join(beats)})" if beats else "")
        + f", and is the best of all methods on {', '.join(best_of_all) or 'none'}."
    ]
    out += paired_summary(rows)
    out += damping_summary(rows)
    out += rounding_summary(rows)
    out += distill_summary(rows)
    out += rotation_summary(rows)
    for task in ("antonyms", "capitals"):
        seeds = _seed_summary(rows, task, 2, ("tacq", "msg", "gptq_g128", "gptq"))
        if seeds:
            out.append(f"- Over calibration samples ({task}, 2-bit, mean ± sd): {seeds}.")
    if gaps:
        out.append(
            "- Share of the GPTQ-to-fp NLL gap TaCQ closes at 2 bits (target >= 50 %): "
            + ", ".join(gaps)
            + "."
        )
    return out


def matched_bits(res: Results) -> list[str]:
    """Issue target: for every peer point, a TaCQ point at equal or lower honest BPW with a
    lower held-out NLL, decided by the paired interval; per task and bit width. The point is
    picked on the dev split where the rows were scored there (the honest count), and also
    by its held-out NLL (a best-of-several look at the test) and as one fixed setting."""
    q, pe = res.get("quality"), res.get("peers")
    if not q or not pe:
        return []
    out = []
    peers = [r for r in pe["rows"] if "error" not in r and "nll_each" in r]
    for bits in sorted({r["bits"] for r in peers}):
        by_held, by_dev, choices, covered = ([], []), ([], []), [], []
        fixed: dict[str, list[str]] = {}  # TaCQ setting -> tasks it wins on its own
        for task in sorted({r["task"] for r in peers if r["bits"] == bits}):
            n = next(r["heldout_examples"] for r in peers if (r["task"], r["bits"]) == (task, bits))
            tacqs = [
                r
                for r in q["rows"]
                if (r["task"], r["bits"], r.get("seed", 0)) == (task, bits, 0)
                and parse_method(r["method"])[0] == "tacq"
                and r.get("heldout_examples") == n
                and "nll_each" in r
            ]
            rivals = [r for r in peers if (r["task"], r["bits"]) == (task, bits)]
            # peer points that some point scored on dev fits: the dev pick needs all of them
            covered += [
                any("dev" in t and t["bpw_honest"] <= p["bpw_honest"] for t in tacqs)
                for p in rivals
            ]
            for t in tacqs:  # one setting that beats every peer point of the task
                if all(
                    t["bpw_honest"] <= p["bpw_honest"] and paired_rows(t, p).better == t["method"]
                    for p in rivals
                ):
                    fixed.setdefault(t["method"], []).append(task)
            choices += [sum(t["bpw_honest"] <= p["bpw_honest"] for t in tacqs) for p in rivals]
            _tally(task, tacqs, rivals, lambda t: t["answer_nll"], by_held)
            _tally(task, [t for t in tacqs if "dev" in t], rivals, _dev_nll, by_dev)
        total = len(by_held[0]) + len(by_held[1])
        goal = f"target 80 % of the {len(list_tasks())} bundled tasks"
        line = (
            f"- Matched bits, {bits}-bit: every peer point (AutoRound, HQQ) is beaten by a TaCQ "
            "point at equal or lower honest BPW, decided on the same held-out examples"
        )
        if covered and all(covered):
            line += (
                ", the TaCQ point picked on the dev split (the lowest dev NLL of the points that "
                f"fit and were scored on dev), on {_count(by_dev, total, goal)}. Picked by the "
                f"held-out NLL instead, the best of {min(choices)} to {max(choices)} points that "
                f"fit (a look at the test, so optimistic): {_count(by_held, total)}."
            )
        else:
            line += (
                f", on {_count(by_held, total, goal)}. The TaCQ point each peer point faces is "
                f"the lowest held-out NLL of those that fit ({min(choices)} to {max(choices)} "
                "points): a best-of-several choice, so a narrow win is optimistic."
            )
            if any(covered):
                line += (
                    f" (A pick on the dev split needs a point scored on dev that fits each peer "
                    f"point; {sum(covered)} of {len(covered)} have one.)"
                )
        out.append(line + _one_setting(fixed, total))
    return out


# The one setting per bit width that faces the never-tuned tasks, fixed before they were run:
# at 2 bits the measured preset; at 3 bits the point the dev split picked on all seven at
# AutoRound g128's bits (the 3-bit preset, per row with 0.35 % kept, costs 3.163 BPW: above
# AutoRound's 3.161).
FRESH_POINTS = {2: Recipe.preset("measured", 2).key(), 3: "tacq_g256_p0.1_d0.1_roth"}
FRESH_GOAL = 2  # of the three never-tuned tasks (issue 45)


def matched_bits_fresh(res: Results) -> list[str]:
    """The matched-bits verdict on the tasks nothing was tuned on, apart from the seven: the
    fixed setting against every peer point at equal or higher honest BPW, paired on the same
    held-out examples, with each side's exact match."""
    q, pe = res.get("quality"), res.get("peers")
    if not q or not pe:
        return []
    ours = [r for r in q.get("fresh_rows", []) if r.get("seed", 0) == 0 and "nll_each" in r]
    peers = [
        r
        for r in pe.get("fresh_rows", [])
        if r.get("seed", 0) == 0 and "error" not in r and "nll_each" in r
    ]
    out = []
    for bits in sorted({r["bits"] for r in peers} & set(FRESH_POINTS)):
        key, won, per = FRESH_POINTS[bits], [], []
        tasks = sorted({r["task"] for r in peers if r["bits"] == bits})
        for task in tasks:
            t = _row(ours, task, bits, key)
            if t is None:
                per.append(f"{task}: {label(key)} not run")
                continue
            fp = _row(ours, task, bits, "fp")
            kept = (
                f" ({t['exact_match'] / fp['exact_match']:.0%} of fp)"
                if fp and fp["exact_match"]
                else ""
            )
            parts, misses = [f"exact match {t['exact_match']:.3f}{kept}"], 0
            for p in sorted((p for p in peers if (p["task"], p["bits"]) == (task, bits)),
                            key=lambda p: p["method"]):  # fmt: skip
                if t["bpw_honest"] > p["bpw_honest"]:
                    parts.append(f"{p['method']} at fewer bits ({p['bpw_honest']:.3f})")
                    misses += 1
                    continue
                if len(t["nll_each"]) != len(p["nll_each"]):
                    parts.append(f"{p['method']} on another held-out set")
                    misses += 1
                    continue
                d = paired_rows(t, p)
                misses += d.better != t["method"]
                parts.append(
                    f"{p['method']} {d.nll.mean:+.3f} {d.nll.text()}, its exact match "
                    f"{p['exact_match']:.3f}"
                    + (_where_it_loses(t, p) if d.better == p["method"] else "")
                )
            won += [] if misses else [task]
            per.append(f"{task}: {'; '.join(parts)}")
        bpw = sorted({r["bpw_honest"] for r in ours if r["method"] == key and r["bits"] == bits})
        cost = f" ({bpw[0]:.3f} honest BPW)" if len(bpw) == 1 else ""
        out.append(
            f"- Never-tuned tasks, {bits}-bit, one setting fixed before they were run, "
            f"{label(key)}{cost}: it beats every peer point at no more bits than the peer's "
            f"(paired held-out NLL, TaCQ minus peer, interval excluding 0; a peer point at "
            f"fewer bits counts against it) on {len(won)} of "
            f"{len(tasks)} ({', '.join(won) or '-'}; target {FRESH_GOAL}). " + " | ".join(per) + "."
        )
    return out


def _where_it_loses(ours: dict, peer: dict, worst: int = 10) -> str:
    """Where a decided loss sits: the typical example, or a few blown up? The median
    per-example NLL difference and the share of the summed difference in the worst examples."""
    diff = sorted(a - b for a, b in zip(ours["nll_each"], peer["nll_each"]))
    share = sum(diff[-worst:]) / sum(diff)
    return (
        f" (per example: median {statistics.median(diff):+.3f}, TaCQ worse on "
        f"{sum(x > 0 for x in diff) / len(diff):.0%}; its {worst} worst examples carry "
        f"{share:.0%} of the summed difference)"
    )


def matched_bits_seeds(res: Results) -> list[str]:
    """Is a matched-bits verdict a property of the method or of the calibration sample? Each
    TaCQ point and peer point run on several samples (seeds), paired sample by sample on the
    same held-out examples."""
    q, pe = res.get("quality"), res.get("peers")
    if not q or not pe:
        return []
    peers = [r for r in pe["rows"] + pe.get("seed_rows", []) if "error" not in r]
    seeded = {(r["task"], r["bits"]) for r in pe.get("seed_rows", [])}
    out = []
    for task, bits, ours in sorted(
        {(r["task"], r["bits"], r["method"]) for r in q["rows"] if r.get("seed", 0) > 0}
    ):
        if (task, bits) not in seeded or parse_method(ours)[0] != "tacq":
            continue
        a = _by_seed(q["rows"], task, bits, ours)
        for theirs in sorted({r["method"] for r in pe["seed_rows"] if r["task"] == task}):
            b = _by_seed(peers, task, bits, theirs)
            common = [  # the same held-out examples, TaCQ at no more bits than the peer
                s
                for s in sorted(set(a) & set(b))
                if len(a[s]["nll_each"]) == len(b[s]["nll_each"])
                and a[s]["bpw_honest"] <= b[s]["bpw_honest"]
            ]
            if len(common) < 2:
                continue
            pairs = [paired_rows(a[s], b[s]) for s in common]
            won = sum(p.better == ours for p in pairs)
            lost = sum(p.better == theirs for p in pairs)
            out.append(
                f"- Over {len(common)} calibration samples ({task}, {bits}-bit, mean ± sd): "
                f"{label(ours)} {_spread(a, common)}; {theirs} {_spread(b, common)}. Paired "
                "per sample (TaCQ minus peer, held-out NLL): "
                + ", ".join(
                    f"seed {s} {p.nll.mean:+.3f} {p.nll.text()}" for s, p in zip(common, pairs)
                )
                + f": TaCQ better on {won}, worse on {lost}, undecided on "
                f"{len(common) - won - lost}."
            )
    return out


def _by_seed(rows: list[dict], task: str, bits: int, method: str) -> dict[int, dict]:
    return {
        r.get("seed", 0): r
        for r in rows
        if (r["task"], r["bits"], r["method"]) == (task, bits, method) and "nll_each" in r
    }


def _spread(by_seed: dict[int, dict], seeds: list[int]) -> str:
    nll = [by_seed[s]["answer_nll"] for s in seeds]
    em = [by_seed[s]["exact_match"] for s in seeds]
    return (
        f"NLL {statistics.mean(nll):.3f} ± {statistics.stdev(nll):.3f}, exact match "
        f"{statistics.mean(em):.3f} ± {statistics.stdev(em):.3f}"
    )


def _dev_nll(row: dict) -> float:
    return row["dev"]["answer_nll"]


def _tally(task: str, tacqs: list[dict], rivals: list[dict], key, tally: tuple) -> None:
    """Add the task to tally's won or lost list: does the TaCQ point picked by key among
    those that fit beat each peer point, decided by the paired interval?"""
    misses = []
    for p in rivals:
        fit = [t for t in tacqs if t["bpw_honest"] <= p["bpw_honest"]]
        best = min(fit, key=key) if fit else None
        if best is None or paired_rows(best, p).better != best["method"]:
            what = (
                "no TaCQ point" if best is None else f"{label(best['method'])} undecided or worse"
            )
            misses.append(f"{p['method']} ({what})")
    won, lost = tally
    (lost if misses else won).append(f"{task}" + (f": {', '.join(misses)}" if misses else ""))


def _count(tally: tuple, total: int, goal: str = "") -> str:
    won, lost = tally
    return (
        f"{len(won)} of {total} tasks measured ({', '.join(won) or '-'}"
        + (f"; {goal}" if goal else "")
        + ")"
        + (f"; not on {'; '.join(lost)}" if lost else "")
    )


def _one_setting(fixed: dict[str, list[str]], total: int) -> str:
    """The stricter count: one TaCQ setting for every task and peer point, no choice made."""
    if not fixed:
        return " No single TaCQ setting beats every peer point of any task on its own."
    best = max(sorted(fixed, key=method_order), key=lambda m: len(fixed[m]))
    return (
        f" With one setting for every task and peer point instead (no choice per task), the "
        f"best is {label(best)}: {len(fixed[best])} of {total} ({', '.join(fixed[best])})."
    )


EM_KEPT_TARGET = 0.85  # issue 18: a 3-bit TaCQ point keeps this share of fp exact match


def _three_bit_fp(rows: list[dict]) -> dict[str, dict]:
    """task -> its 3-bit fp row on a held-out set large enough to decide (150+), where fp
    gets some answers right: the base of every exact-match share."""
    return {
        r["task"]: r
        for r in rows
        if r["method"] == "fp"
        and r["bits"] == 3
        and r["heldout_examples"] >= 150
        and r["exact_match"]
    }


def three_bit_exact_match(res: Results) -> list[str]:
    """Issue target: at 3 bits TaCQ keeps >= 85 % of fp's exact match on every bundled task,
    on the held-out sets large enough to decide (150+). Counted per fixed setting (method,
    group, ratio), the same on every task: picking each task's best point on its held-out
    set would be tuning on the test."""
    q = res.get("quality")
    if not q:
        return []
    rows = [r for r in q["rows"] if r["bits"] == 3 and r.get("seed", 0) == 0]
    fps = _three_bit_fp(rows)
    peer_rows = [
        r for r in (res.get("peers") or {}).get("rows", []) if r["bits"] == 3 and "error" not in r
    ]
    ours = [r for r in rows if parse_method(r["method"])[0] == "tacq"]
    shares = _em_shares(ours, fps)  # method -> task -> (share, row)
    if not shares:
        return []
    bundled = len(list_tasks())
    out = []
    theirs = _em_shares(peer_rows, fps)
    for method in [*sorted(shares, key=method_order), *sorted(theirs)]:
        per_task = shares.get(method) or theirs[method]
        who = label(method) if method in shares else f"the peer {method} (for comparison)"
        met = [t for t, (sh, _) in per_task.items() if sh >= EM_KEPT_TARGET]
        worst = min(per_task, key=lambda t: per_task[t][0])
        bpw = statistics.median(r["bpw_honest"] for _, r in per_task.values())
        out.append(
            f"- 3-bit exact match kept, of fp's, by {who} (honest BPW {bpw:.3f}) "
            f"on the 150+ held-out sets (target >= {EM_KEPT_TARGET:.0%} on every task): "
            f"met on {len(met)} of {len(per_task)} tasks measured ({bundled} bundled): "
            + ", ".join(f"{t} {per_task[t][0]:.1%}" for t in sorted(per_task))
            + f"; lowest {worst} ({per_task[worst][1]['exact_match']:.3f} vs fp "
            f"{fps[worst]['exact_match']:.3f})."
        )
    return out


def preset_pick(rows: list[dict], bits: int) -> tuple[str, dict[str, float]] | None:
    """The rule tacq.quant.recipe.MEASURED follows -> (the method picked, each candidate's mean
    rank). Candidates: TaCQ-scored settings with one scale per row (bits per weight stay
    near the bit width) and no dense rotation (the Quantize screen offers the Hadamard one),
    scored on the dev split of every bundled task; the pick has the lowest mean rank of dev
    answer NLL over the tasks (ties: the lower honest BPW, then the table order). The
    held-out sets are not looked at."""
    tasks = list_tasks()
    per: dict[str, dict[str, dict]] = {}
    for r in rows:
        p = preset_of(r["method"])
        if (
            r["bits"] == bits
            and r.get("seed", 0) == 0
            and "dev" in r
            and p is not None
            and p.group_size is None
            and p.rotation in (None, "hadamard")
        ):
            per.setdefault(r["method"], {})[r["task"]] = r
    per = {m: t for m, t in per.items() if set(tasks) <= set(t)}
    if not per:
        return None
    rank = dict.fromkeys(per, 0.0)
    for task in tasks:
        for i, m in enumerate(sorted(per, key=lambda m: _dev_nll(per[m][task]))):
            rank[m] += (i + 1) / len(tasks)
    bpw = {m: statistics.median(r["bpw_honest"] for r in t.values()) for m, t in per.items()}
    return min(per, key=lambda m: (rank[m], bpw[m], method_order(m))), rank


def presets(res: Results) -> list[str]:
    """The Quantize screen's "best measured" settings, and what they score on held-out."""
    q = res.get("quality")
    if not q:
        return []
    out = []
    for bits in (2, 3):
        pick = preset_pick(q["rows"], bits)
        if pick is None:
            continue
        method, rank = pick
        here = [
            r for r in q["rows"] if (r["bits"], r["method"], r.get("seed", 0)) == (bits, method, 0)
        ]
        fps = {r["task"]: r for r in q["rows"] if (r["bits"], r["method"]) == (bits, "fp")}
        vs_fp = statistics.mean(r["answer_nll"] / fps[r["task"]]["answer_nll"] - 1 for r in here)
        runner = sorted(rank, key=rank.get)[1:2]
        out.append(
            f'- The Quantize screen\'s {bits}-bit "best measured" settings (tacq.quant.recipe): '
            f"{label(method)}, the lowest mean rank of dev answer NLL ({rank[method]:.2f}) of "
            f"the {len(rank)} per-row settings scored on every bundled task"
            + (f" (next: {label(runner[0])}, {rank[runner[0]]:.2f})" if runner else "")
            + f"; on held-out its answer NLL is {vs_fp:+.0%} over fp's on average."
        )
    return out


def exact_match_ceiling(res: Results) -> list[str]:
    """Where no 3-bit TaCQ setting keeps 85 % of fp's exact match: the most any setting kept
    (fixed settings and levers alike, each scored on held-out: a held-out maximum, so an
    upper bound, and a miss by it stands), what the dev split's pick kept, the most a peer
    kept, and the first higher bit width where a TaCQ row meets the target. Where some
    setting meets it and levers were picked on dev: which settings, and what the dev pick
    kept (the fair claim: the others were not chosen blind)."""
    q = res.get("quality")
    if not q:
        return []
    rows = [r for r in q["rows"] if r.get("seed", 0) == 0]
    fps = _three_bit_fp(rows)
    levers = [run for run in (res.get("levers") or {}).get("runs", []) if run["bits"] == 3]
    peers = [r for r in (res.get("peers") or {}).get("rows", []) if "error" not in r]
    out = []
    for task, fp in sorted(fps.items()):
        n, em = fp["heldout_examples"], fp["exact_match"]
        ours = [  # (share, what, honest BPW)
            (r["exact_match"] / em, label(r["method"]), r["bpw_honest"])
            for r in rows
            if (r["task"], r["bits"], r["heldout_examples"]) == (task, 3, n)
            and parse_method(r["method"])[0] == "tacq"
        ] + [
            (x["heldout"]["exact_match"] / em, f"lever {x['lever']}", x["bpw_honest"])
            for run in levers
            if run["task"] == task
            for x in run["levers"]
            if x.get("heldout", {}).get("examples") == n
        ]
        picked = [  # the lever the dev split picked, as scored once on held-out
            (x["heldout"]["exact_match"] / em, x["lever"], x["bpw_honest"])
            for run in levers
            if run["task"] == task
            for x in run["levers"]
            if x["lever"] == run.get("best_on_dev") and x.get("heldout", {}).get("examples") == n
        ]
        pick = (
            f"the setting the dev split picks (lever {picked[0][1]}, {picked[0][2]:.3f} BPW) "
            f"keeps {picked[0][0]:.1%}"
            if picked
            else ""
        )
        if not ours:
            continue
        if max(ours)[0] >= EM_KEPT_TARGET:  # met: by the dev pick, or only by a held-out max
            if pick:
                met = sorted((x for x in ours if x[0] >= EM_KEPT_TARGET), reverse=True)
                out.append(
                    f"- 3-bit exact match on {task}: {len(met)} of the {len(ours)} TaCQ settings "
                    f"scored on held-out keep {EM_KEPT_TARGET:.0%} or more of fp's ({em:.3f}): "
                    + ", ".join(f"{w} {x:.1%} ({b:.3f} BPW)" for x, w, b in met)
                    + f"; {pick}."
                )
            continue
        share, what, bpw = max(ours)
        line = (
            f"- 3-bit exact match on {task}: no TaCQ setting keeps {EM_KEPT_TARGET:.0%} of fp's "
            f"({em:.3f}); the most any of the {len(ours)} settings scored on held-out kept is "
            f"{share:.1%} ({what}, {bpw:.3f} BPW), a held-out maximum and so an upper bound"
            + (f"; {pick}" if pick else "")
        )
        theirs = [
            (r["exact_match"] / em, r["method"], r["bpw_honest"])
            for r in peers
            if (r["task"], r["bits"], r["heldout_examples"]) == (task, 3, n)
        ]
        if theirs:
            share, what, bpw = max(theirs)
            line += f"; the most a peer kept is {share:.1%} ({what}, {bpw:.3f} BPW)"
        higher = sorted(
            (r["bpw_honest"], r["bits"], label(r["method"]), r["exact_match"] / em)
            for r in rows
            if r["task"] == task
            and r["bits"] > 3
            and r["heldout_examples"] == n
            and parse_method(r["method"])[0] == "tacq"
            and r["exact_match"] / em >= EM_KEPT_TARGET
        )
        if higher:
            bpw, bits, what, share = higher[0]
            line += f"; at {bits} bits {what} keeps {share:.1%} ({bpw:.3f} BPW)"
        out.append(line + ".")
    return out


def _em_shares(rows: list[dict], fps: dict) -> dict[str, dict[str, tuple[float, dict]]]:
    """method -> task -> (exact match / fp's, row), on the fp row's held-out examples only."""
    shares: dict[str, dict[str, tuple[float, dict]]] = {}
    for r in rows:
        fp = fps.get(r["task"])
        if fp and r["heldout_examples"] == fp["heldout_examples"]:
            shares.setdefault(r["method"], {})[r["task"]] = (
                r["exact_match"] / fp["exact_match"],
                r,
            )
    return shares


def one_task_time(res: Results) -> list[str]:
    """Issue target: one task's core table (every method once, both bit widths) in under
    90 minutes on the 2-core CPU, measured by bench/one_task.py."""
    ot = res.get("one_task")
    if not ot:
        return []
    out = []
    for r in ot["rows"]:
        parts = ", ".join(
            f"{s['command'].split()[1].removesuffix('.py')} {s['minutes']:.1f} min"
            + ("" if s["rc"] == 0 else f" (exit {s['rc']})")
            for s in r["steps"]
        )
        out.append(
            f"- One task's core table regenerated ({r['task']}: every method once, 2 and 3 "
            f"bits, peers included) in {r['minutes']:.0f} min on this CPU (target < "
            f"{r['target_minutes']:.0f}): {parts}."
        )
    return out


def _peer_alone(row: dict, split: str) -> str:
    """The peer's own rounding from the same run as a kept-weights lever, where scored."""
    alone = row.get("peer_alone", {}).get(split)
    if not alone:
        return ""
    return (
        f"; the peer alone in the same run {alone['answer_nll']:.3f} ({alone['exact_match']:.3f})"
    )


def levers(res: Results) -> list[str]:
    """What each lever did where TaCQ misses a target, on dev, and the dev pick on held-out."""
    lv, q = res.get("levers"), res.get("quality")
    if not lv:
        return []
    out = []
    for run in lv["runs"]:
        fp = run["fp"]
        parts = ", ".join(
            f"{r['lever']} not run: {r['error']}"
            if "error" in r
            else f"{r['lever']} {r['dev']['answer_nll']:.3f} ({r['dev']['exact_match']:.3f}, "
            f"{r['bpw_honest']:.2f} BPW{_peer_alone(r, 'dev')})"
            for r in run["levers"]
        )
        best = next(r for r in run["levers"] if r["lever"] == run["best_on_dev"])
        held = best["heldout"]
        default = _row(q["rows"], run["task"], run["bits"], "tacq") if q else None
        versus = (
            f", against {default['answer_nll']:.3f} ({default['exact_match']:.3f}) for the "
            "default TaCQ row"
            if default and default.get("heldout_examples") == held["examples"]
            else ""
        )
        base = next((r for r in run["levers"] if r["lever"] == "default" and "dev" in r), None)
        if versus and base and best is not base:
            versus += (
                f" ({held['answer_nll'] - default['answer_nll']:+.3f} on held-out where dev "
                f"said {best['dev']['answer_nll'] - base['dev']['answer_nll']:+.3f})"
            )
        fixed = [r for r in run["levers"] if "heldout" in r and r is not best]
        if fixed:
            versus += (
                ". Also scored on held-out as fixed settings (not used to pick): "
                + ", ".join(
                    f"{r['lever']} {r['heldout']['answer_nll']:.3f} ({r['heldout']['exact_match']:.3f}"
                    f"{_peer_alone(r, 'heldout')})"
                    for r in fixed
                )
            )
        out.append(
            f"- Levers, {run['task']} {run['bits']}-bit, TaCQ, chosen on the dev split "
            f"({best['dev']['examples']} examples; dev answer NLL (exact match); fp "
            f"{fp['dev']['answer_nll']:.3f} ({fp['dev']['exact_match']:.3f})): {parts}. Best on "
            f"dev: {run['best_on_dev']}; scored once on held-out: {held['answer_nll']:.3f} "
            f"({held['exact_match']:.3f} = {held['exact_match'] / fp['heldout']['exact_match']:.0%}"
            f" of fp's exact match){versus}."
        )
    return out


def block_sensitivity(res: Results) -> list[str]:
    """Where a bit width loses a task: the share of the all-low to all-high NLL gap that
    one block alone at the extra bit closes; whether the block's cost alone (the others at
    the extra bit) agrees, and whether the summed TaCQ score per block predicts it."""
    bs = res.get("block_sensitivity")
    if not bs:
        return []
    out = []
    for run in bs["runs"]:
        low, high = run["bits"], run["bits"] + 1
        a, b = run["all_low"]["answer_nll"], run["all_high"]["answer_nll"]
        if a <= b or len(run["blocks"]) < 3:
            continue
        blocks = run["blocks"]
        up = [(a - r["only_this_high"]["answer_nll"]) / (a - b) for r in blocks]
        down = [(r["only_this_low"]["answer_nll"] - b) / (a - b) for r in blocks]
        top = sorted(range(len(up)), key=up.__getitem__, reverse=True)[:3]
        score = [r[f"tacq_{low}bit"] for r in blocks]
        out.append(
            f"- Where {low}-bit TaCQ loses {run['task']} ({run['variant']}; dev plus unused "
            f"calibration items, {run['examples']} examples): all blocks at {low} bits answer "
            f"NLL {a:.3f}, all at {high} bits {b:.3f}. One block alone at {high} bits closes at "
            f"most {up[top[0]]:.0%} of that gap (blocks "
            f"{', '.join(str(blocks[i]['block']) for i in top)}: "
            f"{', '.join(f'{up[i]:.0%}' for i in top)}; an even share would be "
            f"{1 / len(up):.0%}); the {len(up)} single upgrades add up to {sum(up):.0%}. A "
            f"block's share upgraded alone and its cost alone at {low} bits (the rest at "
            f"{high}) correlate at {statistics.correlation(up, down):.2f}; the block's summed "
            f"TaCQ score predicts its share at {statistics.correlation(up, score):.2f}."
        )
    return out


def circuit_causal(res: Results) -> list[str]:
    """Damage-only causal test: task vs random, magnitude and the control task."""
    c = res.get("causal")
    if not c:
        return []
    rows = [r for r in c["rows"] if r["damage"] == "round"]
    if not rows:
        return []
    task_d, ctrl_d, rand_d, mag_wins, secs = [], [], [], 0, []
    for r in rows:
        t = {x["weights damaged"]: x for x in r["table"]}
        circ = next(x for k, x in t.items() if k.startswith("circuit"))
        task_d.append(circ["task NLL change"])
        ctrl_d.append(circ["control NLL change"])
        rand_d.append(t["random, same count per Linear"]["task NLL change"])
        mag_wins += circ["task NLL change"] > t["largest |W| (magnitude)"]["task NLL change"]
        secs.append(r["seconds"])
    ratios = [a / b for a, b in zip(task_d, ctrl_d) if b]
    return [
        f"- Causal test (2-bit TaCQ circuit, p = {100 * rows[0]['ratio']:.2f} %, rounded to its "
        f"rows' grid, {len(rows)} tasks): the task's answer NLL rises by {min(task_d):+.1f} to "
        f"{max(task_d):+.1f}, against {min(rand_d):+.2f} to {max(rand_d):+.2f} for random "
        f"weights of the same count per Linear, and more than for the largest-|W| set on "
        f"{mag_wins} of {len(rows)} tasks; but the control task breaks about as much "
        f"(task / control change {min(ratios):.2f} to {max(ratios):.2f}) and generic "
        "perplexity explodes. At this ratio the circuit is weights the whole model needs, "
        "not weights specific to the task. Test time "
        f"{min(secs):.0f}-{max(secs):.0f} s per task (target < 120 s)."
    ]


def paired_summary(rows: list[dict]) -> list[str]:
    """TaCQ against each method, example by example, over the tasks that kept per-example
    values: on how many the held-out set decides for TaCQ, against it, or not at all."""
    seed0 = [r for r in rows if r.get("seed", 0) == 0 and r["bits"] == 2 and "nll_each" in r]
    tasks = sorted({r["task"] for r in seed0 if r["method"] == "tacq"})
    others = sorted(
        {r["method"] for r in seed0 if parse_method(r["method"])[0] not in ("fp", "tacq")},
        key=method_order,
    )
    out = []
    for m in others:
        won, lost, open_ = [], [], []
        for t in tasks:
            a, b = _row(seed0, t, 2, "tacq"), _row(seed0, t, 2, m)
            if a is None or b is None or len(a["nll_each"]) != len(b["nll_each"]):
                continue
            p = paired_rows(a, b)
            {"tacq": won, m: lost}.get(p.better, open_).append(f"{t} {p.nll.mean:+.2f}")
        if won or lost or open_:
            n = len(won) + len(lost) + len(open_)
            out.append(
                f"- TaCQ vs {label(m)}, 2-bit, paired on the same held-out examples (mean NLL "
                f"difference, 95 % bootstrap interval excluding 0 = decided): TaCQ better on "
                f"{len(won)} of {n} tasks ({', '.join(won) or '-'}), worse on "
                f"{len(lost)} ({', '.join(lost) or '-'}), undecided on {len(open_)} "
                f"({', '.join(open_) or '-'})."
            )
    return out


def damping_summary(rows: list[dict]) -> list[str]:
    """Each damped TaCQ row against the same TaCQ point at the paper's damping, paired per
    task: does more damping of GPTQ's Hessians carry over from the dev split it was picked
    on (bench/levers.py) to every task's held-out set?"""
    plain = [
        r
        for r in rows
        if not (split_rounding(r["method"])[1] or split_distill(r["method"])[1])
        and not rotated(r["method"])
    ]
    return _paired_with_and_without(
        plain,
        lambda m: split_damp(m)[0] if split_damp(m)[1] else None,
        lambda m: f"GPTQ damping {split_damp(m)[1]:g} instead of the paper's 0.01",
    )


def rounding_summary(rows: list[dict]) -> list[str]:
    """Each TaCQ row with tuned rounding (tacq.quant.rounding) against the same point with GPTQ's
    rounding as it is, paired per task: what the rounding pass buys on held-out; then each
    checked row against the same tuning unchecked: what the held-aside check buys; then each
    row with its grid ends tuned against the same rounding without: what the clip buys."""
    return (
        _paired_with_and_without(
            rows,
            lambda m: unrounded(m) if split_rounding(m)[1] else None,
            lambda m: f"rounding tuned {split_rounding(m)[1]} steps per block after GPTQ",
        )
        + _paired_with_and_without(
            rows,
            lambda m: unchecked(m) if rounding_checked(m) and unclipped(m) == m else None,
            lambda m: "each block's tuning kept only where the held-aside answer loss did not rise",
        )
        + _paired_with_and_without(
            rows,
            lambda m: None if unclipped(m) == m else unclipped(m),
            lambda m: "each row's grid ends, so its scale and zero, tuned with the rounding",
        )
    )


def distill_summary(rows: list[dict]) -> list[str]:
    """Each TaCQ row with distilled scales (tacq.quant.distill) against the same point without,
    paired per task: what distilling the scales from the fp model buys on held-out."""
    return _paired_with_and_without(
        rows,
        lambda m: undistilled(m) if split_distill(m)[1] else None,
        lambda m: (
            f"every scale distilled from the fp model, {split_distill(m)[1]} epochs, the "
            "epoch kept by held-aside calibration examples"
        ),
    )


def rotation_summary(rows: list[dict]) -> list[str]:
    """Each rotated TaCQ row (tacq.quant.rotation) against the same point quantized in the
    original basis, paired per task: what the rotation buys on held-out."""
    basis = _paired_with_and_without(
        rows,
        lambda m: unrotated(m) if rotated(m) else None,
        lambda m: "the unkept weights quantized by GPTQ in a random rotated basis",
    )
    structured = _paired_with_and_without(
        rows,
        lambda m: unrotated(m) + ROTATED if rotation_kind(m) == "hadamard" else None,
        lambda m: "random signs, a small Haar matrix Kronecker a Hadamard one, vs a dense Haar R",
    )
    return basis + structured


def _paired_with_and_without(rows: list[dict], without, what) -> list[str]:
    """Every TaCQ row whose method has a variant `without(method)` (None: not one), paired
    with that row per task on the same held-out examples."""
    seed0 = [r for r in rows if r.get("seed", 0) == 0 and "nll_each" in r]
    pairs = sorted(
        {
            (r["bits"], r["method"], without(r["method"]))
            for r in seed0
            if without(r["method"]) and parse_method(r["method"])[0] == "tacq"
        },
        key=lambda p: (p[0], method_order(p[1])),
    )
    out = []
    for bits, changed, plain in pairs:
        won, lost, open_ = [], [], []
        for t in sorted({r["task"] for r in seed0}):
            a, b = _row(seed0, t, bits, changed), _row(seed0, t, bits, plain)
            if a is None or b is None or len(a["nll_each"]) != len(b["nll_each"]):
                continue
            p = paired_rows(a, b)
            {changed: won, plain: lost}.get(p.better, open_).append(f"{t} {p.nll.mean:+.2f}")
        n = len(won) + len(lost) + len(open_)
        if n:
            out.append(
                f"- {label(changed)} vs {label(plain)} ({what(changed)}), {bits}-bit, "
                f"paired on held-out: better on {len(won)} of {n} tasks "
                f"({', '.join(won) or '-'}), worse on {len(lost)} ({', '.join(lost) or '-'}), "
                f"undecided on {len(open_)} ({', '.join(open_) or '-'})."
            )
    return out


def _seed_summary(rows: list[dict], task: str, bits: int, methods: tuple[str, ...]) -> str:
    parts = []
    for m in methods:
        nll = _samples(rows, task, bits, m)
        if len(nll) >= 2:
            parts.append(
                f"{label(m)} {statistics.mean(nll):.2f} ± {statistics.stdev(nll):.2f} "
                f"({len(nll)} samples)"
            )
    return ", ".join(parts)


def cross_task(res: Results) -> list[str]:
    q = res.get("quality")
    cross = (q or {}).get("cross_task") or []
    ratios = []
    for r in cross:
        if r["method"] != "tacq":
            continue
        own = _nll(q["rows"], r["eval_task"], 2, "tacq")
        if own:
            ratios.append(r["answer_nll"] / own)
    if not ratios:
        return []
    return [
        f"- Circuits are task-specific: TaCQ 2-bit calibrated on another task is "
        f"{min(ratios):.1f}-{max(ratios):.1f}x worse on held-out NLL than calibrated on the task "
        "itself (cross-task table)."
    ]


def speed(res: Results) -> list[str]:
    out = []
    s = res.get("speed")
    if s:
        out.append(
            f"- The default CLI pipeline ({s['calib_examples']} examples, TaCQ {s['bits']}-bit, "
            f"eval) takes {s['end_to_end_s'] / 60:.1f} minutes (target < "
            f"{s['target_end_to_end_s'] / 60:.0f}), peak RSS {s['peak_rss_mb'] / 1024:.1f} GB "
            f"(target < {s['target_peak_rss_mb'] / 1024:.0f} GB)."
        )
        g = s.get("gptq_compare")
        if g:
            out.append(
                f"- GPTQ fast path vs the old one (same run, bit-identical: {g['bit_identical']}; "
                f"held-out NLL {s['heldout_nll_variant']:.4f} both): x{g['unmasked_speedup']:.2f} "
                f"unmasked, x{g['masked_speedup']:.2f} masked, x{s['end_to_end_speedup']:.2f} end "
                f"to end, x{s['demo_quick_speedup']:.2f} on the quick demo; targets "
                f"{s['target_gptq_speedup']:g} / {s['target_end_to_end_speedup']:g} / "
                f"{s['target_demo_quick_speedup']:g}. The pass is compute-bound on this CPU: the "
                "mse grid search (one pow(|err|, 2.4) per weight and grid step) and the rank-1 "
                "updates, which must keep their textbook geometry to stay bit-identical."
            )
        out.append(
            f"- Batched per-sample gradients are x{s['grads_speedup']:.2f} faster than the "
            f"batch-size-1 autograd loop ({s['grads_batched_s']:.1f} s vs {s['grads_loop_s']:.1f} s"
            f", median of {s['grads_repeats']}; target 3x), max relative difference "
            f"{s['grads_max_rel_diff']:.0e}. Both do the same per-sample products; on 2 cores "
            "the gain can only come from batching the forward and backward pass."
        )
    sel, sl = res.get("selection"), res.get("slider_app")
    if sel:
        line = (
            f"- A new slider ratio is a {sel['new_ratio_median_ms']:.1f} ms lookup (target < "
            f"{sel['target_new_ratio_ms']:g} ms); the app's handler takes "
            f"{sel['render_median_ms']:.0f} ms"
        )
        if sl:
            line += (
                f"; release to redrawn heatmap through the app {sl['median_ms']:.0f} ms median, "
                f"{sl['p95_ms']:.0f} ms p95 (target < {sl['target_ms']:g} ms), most of it "
                "Gradio's round trip and plotly redrawing in chromium"
            )
        out.append(line + ".")
    return out


def packed_memory(res: Results) -> list[str]:
    """Variants in memory: their own bytes against the fp16 Linears, and chat speed."""
    pk = res.get("packed")
    if not pk:
        return []
    m, sp = pk["memory"], pk["speed"]
    two, dense = m["2-bit"], m["dense 2-bit copy (before)"]
    comp, eager = sp["packed 2-bit, compiled"], sp["packed 2-bit, eager"]
    return [
        f"- A packed 2-bit variant holds {two['resident_mb']:.1f} MB in memory, "
        f"{100 * two['share_of_fp16_linears']:.1f} % of its Linears in fp16 (target <= 20 %; "
        f"RSS change on loading it {two['rss_change_mb']:.1f} MB), where a dense copy held "
        f"{dense['resident_mb']:.0f} MB; 3-bit: {m['3-bit']['resident_mb']:.1f} MB. It chats "
        f"at {comp['tokens_per_s']:.1f} tokens/s through the compiled one-token kernel, "
        f"{comp['vs_dense']:.2f}x the dense copy's speed (target >= 0.5x; "
        f"{comp['compile_s']:.0f} s of compiling first), {eager['vs_dense']:.2f}x dequantizing "
        "per forward." + _rotated_cost(m, sp)
    ]


def _rotated_cost(memory: dict, speed: dict) -> str:
    """What the rotated basis costs a 3-bit variant in memory and chat speed, if measured."""
    rot, plain = memory.get("3-bit rotated"), memory["3-bit"]
    if rot is None:
        return ""
    fast, slow = speed["packed 3-bit rotated, compiled"], speed["packed 3-bit, compiled"]
    return (
        f" Rotated (Hadamard) 3-bit: {rot['resident_mb']:.1f} MB against {plain['resident_mb']:.1f},"
        f" {fast['tokens_per_s']:.1f} tokens/s compiled, "
        f"{fast['tokens_per_s'] / slow['tokens_per_s']:.2f}x the unrotated 3-bit's."
    )


def demo(res: Results) -> list[str]:
    """The one-click demo's measured pick and the honesty of its expected time."""
    out = []
    dp, dt = res.get("demo_pick"), res.get("demo_time")
    if dp:
        p = dp["pick"]
        verdict = "meets" if p["meets_target"] else "misses"
        g = p.get("worst_g128_difference")
        g = "" if g is None else f" and {g:+.2f} over GPTQ 2-bit g128"
        out.append(
            f"- The one-click demo runs {p['task']} with TaCQ `{recipe_key(p)}` (honest BPW "
            f"{p['bpw_honest']:.2f}), picked on dev: in its worse mode TaCQ 2-bit exact match "
            f"{p['worst_tacq2_em']:.2f}, {p['worst_difference']:+.2f} over GPTQ 2-bit per "
            f"channel{g} ({verdict} the 0.5 / +0.4 target over per channel)."
        )
    if dt:
        first = [r for r in dt["runs"] if r["attempt"].startswith("first")]
        offs = ", ".join(
            f"{r['mode']} {r['actual_s']:.0f} s measured vs {r['expected_s']:.0f} s expected "
            f"({100 * r['off']:+.0f} %)"
            for r in first
        )
        out.append(f"- Demo time on a first run with empty caches: {offs} (target within 30 %).")
        both = [r for r in dt["runs"] if r["attempt"].startswith("both")]
        if both:
            b, limit = both[0], dt["quick_limit_s"]
            fits = "fits" if b["actual_s"] <= limit else "does not fit"
            out.append(
                f"- The quick demo with both GPTQ baselines took {b['actual_s']:.0f} s on empty "
                f"caches: it {fits} {limit} s, so the quick demo makes "
                f"{'both' if b['actual_s'] <= limit else 'g128 only'}."
            )
    return out


def capitals(res: Results) -> list[str]:
    q, ab = res.get("quality"), res.get("ablations")
    if not q:
        return []
    rows = q["rows"]
    out = []
    for t in sorted({r["task"] for r in rows}):
        tacq, msg = _nll(rows, t, 2, "tacq"), _nll(rows, t, 2, "msg")
        if tacq is None or msg is None or msg >= tacq:
            continue
        line = f"- {t}, 2-bit, default settings: MSG ({msg:.3f}) beats TaCQ ({tacq:.3f})."
        if ab:
            by = {(r["config"], r["method"]): r for r in ab["rows"] if r["task"] == t}
            ao_t, ao_m = by.get(("answer-only loss", "tacq")), by.get(("answer-only loss", "msg"))
            if ao_t and ao_m:
                line += (
                    f" With the loss on answer tokens only (the paper's setting) TaCQ reaches "
                    f"{ao_t['answer_nll']:.3f} ({ao_t['gap_closed']:.0%} of the gap) and MSG "
                    f"{ao_m['answer_nll']:.3f}."
                )
            al_t, al_m = (
                by.get(("all calibration examples", "tacq")),
                by.get(("all calibration examples", "msg")),
            )
            if al_t and al_m:
                line += (
                    f" With all {al_t['calib_examples']} calibration examples: TaCQ "
                    f"{al_t['answer_nll']:.3f}, MSG {al_m['answer_nll']:.3f}."
                )
        out.append(line)
    return out


def three_bit(res: Results) -> list[str]:
    q, ab = res.get("quality"), res.get("ablations")
    if not q:
        return []
    rows = q["rows"]
    rel = []
    for t in sorted({r["task"] for r in rows}):
        fp, tacq, gptq = (_nll(rows, t, 3, m) for m in ("fp", "tacq", "gptq"))
        if fp and tacq and gptq:
            rel.append(f"{t} TaCQ {tacq / fp - 1:+.0%} (GPTQ {gptq / fp - 1:+.0%})")
    if not rel:
        return []
    line = (
        "- 3-bit held-out NLL relative to fp (target TaCQ within +10 %): "
        + ", ".join(rel)
        + ". This 135M model loses far more at 3 bits than the paper's 8B models."
    )
    more = [
        f"{t} {kept / base - 1:+.0%}"
        for t in sorted({r["task"] for r in rows})
        if (base := _nll(rows, t, 3, "fp")) and (kept := _nll(rows, t, 3, "tacq_p1.0"))
    ]
    sweep = [r for r in (ab or {}).get("sweep", []) if r["bits"] == 3 and r["ratio"] > 0]
    if more:  # the held-out rows themselves, rather than the older 24-example sweep
        line += " Keeping 1.00 % instead of 0.35 %: " + ", ".join(more) + "."
    elif sweep:
        line += (
            " Keeping more weights helps without getting there: "
            + ", ".join(
                f"{r['answer_nll'] / r['fp_nll'] - 1:+.0%} at {100 * r['ratio']:.2f} % kept ({r['task']})"
                for r in sweep
            )
            + "."
        )
    return [line]


def em_misses(res: Results) -> list[str]:
    """Why a peer keeps more exact match where TaCQ's answer NLL is lower: each miss sorted
    into the right answer with more on its line, or another answer (bench/em_misses.py)."""
    rows = (res.get("em_misses") or {}).get("rows", [])
    q = (res.get("quality") or {}).get("rows", [])
    out = []
    for task, bits in sorted({(r["task"], r["bits"]) for r in rows}):
        here = sorted(
            (r for r in rows if (r["task"], r["bits"]) == (task, bits)),
            key=lambda r: method_order(r["method"]),
        )
        parts = [
            f"{'fp' if r['method'] == 'fp' else label(r['method'])} right {r['right']}, the "
            f"right answer then more on its line {r['answer_then_more']}, another answer "
            f"{r['other_answer']}"
            for r in here
        ]
        again = [  # the same recipe's bench/quality.py row: another run of it
            f"{label(r['method'])} exact match {x['exact_match']:.3f}, NLL {x['answer_nll']:.3f} "
            f"(here {r['exact_match']:.3f}, {r['answer_nll']:.3f})"
            for r in here
            if r["method"] != "fp" and (x := _row(q, task, bits, r["method"]))
        ]
        out.append(
            f"- Exact-match misses ({task}, {bits}-bit, {here[0]['heldout_examples']} held-out "
            f"examples, greedy first line): {'; '.join(parts)}."
            + (f" The same recipe in bench/quality.py's run: {'; '.join(again)}." if again else "")
        )
    return out


def noise(res: Results) -> list[str]:
    """How far 2-bit rows move with the calibration sample alone."""
    q = res.get("quality")
    if not q:
        return []
    spread = {}
    for task, m in {(r["task"], r["method"]) for r in q["rows"] if r.get("seed", 0) > 0}:
        nll = _samples(q["rows"], task, 2, m)
        if len(nll) >= 2:
            spread[f"{LABEL[m]} ({task})"] = statistics.stdev(nll)
    if not spread:
        return []
    worst = max(spread, key=spread.get)
    held = max(r.get("heldout_examples", 0) for r in q["rows"])
    return [
        f"- 2-bit results move with the calibration sample alone: the NLL standard deviation "
        f"over samples reaches {spread[worst]:.2f} for {worst}. Read 2-bit differences under "
        f"~{2 * spread[worst]:.1f} NLL as noise: {held} held-out examples per task are too "
        "few to separate close methods."
    ]


def omp(res: Results) -> list[str]:
    o = res.get("omp_wait")
    if not o:
        return []
    sec = o["seconds"]

    def gptq(policy: str, load: str) -> float | None:
        return sec.get(f"{policy}, {load}", {}).get("gptq_1536x576_s")

    spin_idle, passive_idle = gptq("spin (OpenMP default)", "idle"), gptq("passive", "idle")
    off, on = "job thread, start-up off main", "job thread, start-up on main"
    app_now, app_before = (
        gptq(f"spin (OpenMP default), {off}", "idle"),
        gptq(f"spin (OpenMP default), {on}", "idle"),
    )
    chat_spin, chat_passive = (
        gptq(f"spin (OpenMP default), {off}", "beside a chat thread"),
        gptq(f"passive, {off}", "beside a chat thread"),
    )
    if None in (spin_idle, passive_idle, app_now, app_before, chat_spin, chat_passive):
        return []
    return [
        f"- OpenMP threads: sleeping idle threads (PASSIVE) make GPTQ {passive_idle / spin_idle:.1f}x "
        f"slower on an idle CPU, and so does a worker pool left on the main thread for a job on "
        f"another thread ({app_before / app_now:.1f}x). With the model loaded on a thread that "
        f"ends, a job thread under OpenMP's default runs at the CLI's speed, and beside a chat "
        f"thread it takes {chat_spin:.2f} s against PASSIVE's {chat_passive:.2f} s: the app "
        "keeps the default."
    ]


def large_models(res: Results) -> list[str]:
    """The plan's estimate for an 8B model on an 80 GB GPU (a computation, not a measurement)."""
    from tacq.shapes import Shapes
    from tacq.study.plan import CUDA_LATENCY_FACTOR, RunSettings, plan_run, read_config

    shapes = Shapes.from_config(read_config("llama-3-8b"))
    settings = RunSettings(
        128,
        2048,
        1,
        2,
        dtype_bytes=2,
        accum_stats=1,
        latency_factor=CUDA_LATENCY_FACTOR,
        shared_memory=False,
    )
    stages = plan_run(shapes, settings, 400e12)
    peak = max(stages, key=lambda p: p.device_bytes)
    minutes = sum(p.seconds for p in stages) / 60
    g = res.get("large_gpu")
    measured = (
        f" Measured on {g['environment']['device']}: extrapolated full run "
        f"{g['extrapolated_total_min']:.1f} min."
        if g
        else " Not measured yet: no GPU has run `bench/large_gpu.py`."
    )
    return [
        "- Large models (planned): `python -m tacq plan --model llama-3-8b --device cuda "
        "--tflops 400 --memory-gb 80 --examples 128 --max-length 2048 --batch-size 1` "
        f"(|g| sums only, the default) estimates {peak.device_bytes / 2**30:.0f} GB peak on the GPU "
        f"({peak.stage}) and about {minutes:.0f} minutes in all, most of it GPTQ, whose GPU "
        "speed factor is a guess until a GPU run measures it." + measured
    ]


def tuned_peer_broke(res: Results) -> list[str]:
    """A tuned AutoRound point far worse than its own RTN mode at the same settings: its
    rounding, not our reading of it, is what the matched-bits table then compares against."""
    pe = res.get("peers")
    if not pe:
        return []
    rows = [r for r in pe["rows"] if "error" not in r]
    out = []
    for r in rows:
        if r["peer"] != "autoround" or r["method"].startswith("autoround-rtn"):
            continue
        rtn = next(
            (
                x
                for x in rows
                if (x["task"], x["bits"], x["method"])
                == (r["task"], r["bits"], f"autoround-rtn_g{r['group_size']}")
            ),
            None,
        )
        if rtn is None or r["ppl"] < 10 * rtn["ppl"]:
            continue
        err = r.get("weight_rel_err")
        moved = (
            f"; no Linear is far off (weight error median {err['median']:.3f}, worst "
            f"{err['max']:.3f} at {err['worst']}), so the break is in how the rounded layers "
            "work together, not one bad layer"
            if err
            else ""
        )
        out.append(
            f"- AutoRound tuned ({r['settings']['iters']} steps) {r['bits']}-bit "
            f"g{r['group_size']} on {r['task']}: generic ppl {r['ppl']:.3g} and answer NLL "
            f"{r['answer_nll']:.2f}, against {rtn['ppl']:.3g} and {rtn['answer_nll']:.2f} for "
            f"its own RTN mode at the same settings{moved}. Both points stay in the table."
        )
    return out


def peer_breakdown(res: Results) -> list[str]:
    """Why a tuned peer broke (bench/peer_breakdown.py): not our reading of it, then where."""
    pb = res.get("peer_breakdown")
    if not pb:
        return []
    peers = (res.get("peers") or {}).get("rows", [])
    out = []
    for r in [r for r in pb["rows"] if not r.get("generic_calibration")]:
        d, rtn, j, swap = r["layer_drift"], r["rtn_mode"], r["largest_jump_layer"], r["swap_ppl"]
        rd = rtn["layer_drift"]
        below = next((i for i, (a, b) in enumerate(zip(d, rd)) if a > b), len(d))
        table = next(
            (
                x
                for x in peers
                if (x["task"], x["bits"], x.get("group_size"), x["peer"])
                == (r["task"], r["bits"], r["group_size"], r["peer"])
                and x.get("settings", {}).get("iters") == r["iters"]
            ),
            {},
        )
        line = (
            f"- Why AutoRound tuned ({r['iters']} steps) {r['bits']}-bit g{r['group_size']} "
            f"breaks on {r['task']}: not our reading of it. Its own model and our copy of its "
            f"weights score the same generic perplexity ({r['peer_own_model_ppl']:.3g} and "
            f"{r['peer_ppl']:.3g}; fp {r['fp_ppl']:.3g}), and no group holds more than "
            f"{r['max_levels']} values (its {2 ** r['bits']}-level grid). On held-out prompts its "
            f"hidden states stay closer to fp's than its RTN mode's do up to layer {below - 1} "
            f"(relative drift {d[below - 1]:.2f} vs {rd[below - 1]:.2f}), then drift further: "
            f"{d[-3]:.2f} vs {rd[-3]:.2f} at layer {len(d) - 3} and {d[-1]:.2f} vs {rd[-1]:.2f} "
            f"at the last. Block {j} adds the most, yet alone in the fp model it costs little "
            f"(ppl {swap[f'fp model + peer block {j}']:.3g}) and putting it back to fp does not "
            f"repair the tuned model ({swap[f'peer model + fp block {j}']:.3g}): the damage is "
            "spread over many blocks' rounding, each tuned on its own block loss"
            + (
                f" on {table['used']['tokens']} calibration tokens."
                if table.get("used", {}).get("tokens")
                else "."
            )
        )
        gen = next(
            (
                g
                for g in pb["rows"]
                if g.get("generic_calibration")
                and (g["task"], g["bits"], g["group_size"], g["iters"])
                == (r["task"], r["bits"], r["group_size"], r["iters"])
            ),
            None,
        )
        if gen:
            line += (
                f" Calibrated on {gen['calibration_tokens']} tokens instead (the task examples "
                "plus the part of the generic text perplexity does not read): generic ppl "
                f"{gen['peer_ppl']:.3g} and answer NLL {gen['answer_nll']:.2f}"
                + (f" (vs {table['answer_nll']:.2f})" if "answer_nll" in table else "")
                + f"; its RTN mode {gen['rtn_mode']['ppl']:.3g} and "
                f"{gen['rtn_mode']['answer_nll']:.2f}."
            )
        out.append(line)
    return out


def _scaling_line(t: dict, sc: dict) -> str:
    """The scaling bench's targets on its largest shape, in one line."""
    e = sc["exponents"]
    mem = max(t["memory_off"].values(), key=abs)
    time_ = max(t["time_off"].values(), key=abs)
    return (
        f"- Scaling (random Llama shapes, `python bench/scale.py`): {t['shape']}'s whole default "
        f"path takes {t['total_s'] / 60:.1f} min on this CPU with peak RSS "
        f"{t['peak_rss_over_fp32']:.2f}x its fp32 weights (target <= {t['rss_limit_over_fp32']}x)"
        f"; gradients grow as parameters^{e['collect']['time']:.2f} in time, GPTQ as "
        f"^{e['reference GPTQ']['time']:.2f} (reference) and ^{e['masked GPTQ']['time']:.2f} "
        f"(masked). `tacq plan`, its CPU time factors fitted on the two smaller shapes, is off "
        f"by at most {100 * mem:+.0f} % in memory (target +-25 %) and {100 * time_:+.0f} % in "
        "time (target +-50 %) there."
    )


def scaling(res: Results) -> list[str]:
    sc = res.get("scale")
    t = (sc or {}).get("targets")
    if not t or not (t["rss_met"] and t["memory_met"] and t["time_met"]):
        return []
    return [_scaling_line(t, sc)]


def scaling_open(res: Results) -> list[str]:
    sc = res.get("scale")
    t = (sc or {}).get("targets")
    if not t or (t["rss_met"] and t["memory_met"] and t["time_met"]):
        return []
    missed = [k for k in ("rss", "memory", "time") if not t[f"{k}_met"]]
    return [_scaling_line(t, sc) + f" Missed: {', '.join(missed)}."]


MET: list[Callable[[Results], list[str]]] = [
    quality_targets,
    matched_bits,
    matched_bits_seeds,
    matched_bits_fresh,
    three_bit_exact_match,
    presets,
    one_task_time,
    circuit_causal,
    packed_memory,
    demo,
    cross_task,
    speed,
    scaling,
]
OPEN: list[Callable[[Results], list[str]]] = [
    capitals,
    em_misses,
    noise,
    three_bit,
    exact_match_ceiling,
    levers,
    block_sensitivity,
    tuned_peer_broke,
    peer_breakdown,
    omp,
    large_models,
    scaling_open,
]


def findings(res: Results) -> str:
    """The findings section: what the results show, then the open points."""
    met = [line for f in MET for line in f(res)]
    open_ = [line for f in OPEN for line in f(res)]
    return "\n".join(
        [
            "## What the numbers say",
            "",
            "**Measured**",
            *met,
            "",
            "**Open, with the evidence**",
            *open_,
        ]
    )
