"""bench/README.md (one page, bench/onepage.py) and its appendices bench/results/*.md,
generated from the committed results in bench/results/*.json.

    python bench/tables.py            # print the one page
    python bench/tables.py --write    # rewrite the page and the appendices (never by hand)
Only formats what the benchmark scripts measured (findings: bench/findings.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import math

from _common import ROOT
from demo_pick import recipe_key
from findings import findings
from onepage import page
from quality import cross_markdown, fill_gap_closed, markdown, paired_markdown

from tacq.circuit.saliency import METRICS, metrics_in
from tacq.data.tasks import list_tasks
from tacq.study.runs import PLAIN_METHODS

RESULTS = ROOT / "bench" / "results"


@functools.cache  # each file read once per run (header, findings and tables all use it)
def load(topic: str) -> dict | None:
    path = RESULTS / f"{topic}.json"
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    if topic in ("quality", "peers"):  # the tables and counts of the bundled seven read "rows"
        seven = set(list_tasks())
        rows = d.get("rows", [])
        d["rows"] = [r for r in rows if r["task"] in seven]
        d["fresh_rows"] = [r for r in rows if r["task"] not in seven]  # never tuned on
    if topic == "peers":  # the default calibration sample; others (seeds) apart
        rows = d["rows"]
        d["rows"] = [r for r in rows if r.get("seed", 0) == 0]
        d["seed_rows"] = [r for r in rows if r.get("seed", 0) > 0]
    if topic == "quality":  # rows merged from several runs: their gaps from the merged rows
        fill_gap_closed(d["rows"])
    return d


def env_line(d: dict) -> str:
    e = d["environment"]
    dirty = " with uncommitted changes" if e.get("dirty") else ""
    args = f"; `{' '.join(e['args'])}`" if e.get("args") else ""
    return (
        f"*{e['device']}, torch {e['torch']}, {e['threads']} threads, commit "
        f"{e['commit']}{dirty}{args}*"
    )


SCRIPTS = [  # (command, what it measures, result topic)
    (
        "python bench/quality.py --tasks antonyms,capitals,dates,records --bits 2 --methods "
        "fp,gptq,gptq_g128,msg,tacq",
        "2-bit rows on the held-out sets of 150+ examples: answer NLL and exact match with 95 % "
        "bootstrap intervals, KL to fp, perplexity on `assets/text/generic.txt`, gap closed, "
        "per-example values for the paired tables",
        "quality",
    ),
    (
        "python bench/quality.py --tasks antonyms,capitals,plurals --bits 2 --cross`, "
        "`--tasks antonyms --bits 3` and `--tasks capitals,plurals --bits 3 --methods "
        "fp,rtn,gptq,magnitude,msg,tacq",
        "older rows, on the 24-example held-out sets (plurals; all 3-bit rows; the "
        "cross-task matrix), until rerun",
        "quality",
    ),
    (
        "python bench/peers.py --task antonyms --peers hqq --bits 2,3` and `--peers autoround "
        "--bits 2,3 --iters 50` (and `--generic-calibration",
        "HQQ and AutoRound run by their own packages (`pip install -r "
        "bench/requirements-peers.txt`), scored by our evaluator; matched-bits table; "
        "`autoround+generic` rows: AutoRound also calibrated on the generic text perplexity "
        "does not read",
        "peers",
    ),
    (
        "python bench/one_task.py --task past_tense",
        "one task's core table regenerated and timed: bench/quality.py (every method of ours "
        "once, 2 and 3 bits) then bench/peers.py (both bit widths)",
        "one_task",
    ),
    (
        "python bench/levers.py --task antonyms --bits 3",
        "TaCQ under each lever (kept ratio, answer-only loss, all calibration examples, "
        "group size, act-order, Hessians from the original activations, rotation, tuned "
        "rounding, distilled scales, TaCQ's kept weights on HQQ's / AutoRound's rounding) on "
        "the dev split; the dev pick scored once on held-out",
        "levers",
    ),
    (
        "python bench/block_sensitivity.py --task capitals --bits 3",
        "where a bit width loses a task: each decoder block alone at one more bit (and alone "
        "at the lower one), on dev plus unused calibration items; summed TaCQ / QAL scores "
        "per block",
        "block_sensitivity",
    ),
    (
        "python bench/peer_breakdown.py --task antonyms --bits 3 --iters 50` (and "
        "`--generic-calibration",
        "why a tuned peer breaks: its own model vs our copy, levels per group, hidden-state "
        "drift per layer beside its RTN mode, block swaps",
        "peer_breakdown",
    ),
    (
        "python bench/em_misses.py --task next_number --bits 3",
        "what an exact-match miss is made of: the right answer with more on its line, or "
        "another answer (greedy first line on held-out)",
        "em_misses",
    ),
    (
        "python bench/ablations.py --tasks capitals,antonyms",
        "TaCQ / MSG with answer-only loss and with all calibration examples; ratio sweep",
        "ablations",
    ),
    (
        "python bench/speed.py",
        "default pipeline with the fast and the old GPTQ path (same run, empty caches), peak "
        "RSS, whole-model GPTQ old vs new with bit-identity check, quick demo old vs new, "
        "batched gradients vs the batch-size-1 loop",
        "speed",
    ),
    (
        "python bench/scale.py",
        "the default path (gradients, reference and masked 2-bit GPTQ, TaCQ scores, packed "
        "variant, chat) on random SmolLM2-135M, SmolLM2-360M and TinyLlama-1.1B shapes: time, "
        "peak RSS and disk per stage, growth exponents, `tacq plan`'s estimate against measured",
        "scale",
    ),
    (
        "python bench/fit.py",
        "auto-fit per bundled task with cold caches: the smallest variant keeping 90 % of fp's "
        "dev exact match, its held-out score, the wall time",
        "fit",
    ),
    (
        "python bench/fresh.py",
        "the never-tuned tasks (assets/tasks/fresh/): the original model's exact match and "
        "answer NLL on dev and held-out (kept only where it is at least 0.5)",
        "fresh",
    ),
    (
        "python bench/upload_memory.py",
        "peak memory and time of reading a 20 MB upload of each shape",
        "upload_memory",
    ),
    (
        "python bench/selection.py",
        "slider: new ratio lookup vs re-sorting, the app's handler",
        "selection",
    ),
    (
        "python bench/slider_app.py",
        "slider release to redrawn heatmap through the running app in chromium",
        "slider_app",
    ),
    (
        "python bench/health_latency.py",
        "/healthz latency while 8 browser sessions chat and a 9th quantizes (the eight-sessions "
        "browser test's load; the test asserts only that it answers)",
        "health_latency",
    ),
    (
        "python bench/accumulators.py",
        "top-k overlap of bf16 / host gradient sums vs fp32",
        "accumulators",
    ),
    (
        "python bench/omp_wait.py",
        "OpenMP wait policy idle, beside another process, beside a chat thread",
        "omp_wait",
    ),
    (
        "python bench/large_gpu.py",
        "Llama-3-8B-shaped random model on a CUDA GPU: gradients per 1k tokens, GPTQ per "
        "block, peak memory",
        "large_gpu",
    ),
]


def last_run(topic: str) -> str:
    d = load(topic)
    if d is None:
        return "not run"
    e = d["environment"]
    took = f", {e['wall_s'] / 60:.1f} min" if "wall_s" in e else ""
    return f"{e.get('date', '?')}, {e['commit']}{' (dirty)' if e.get('dirty') else ''}{took}"


def header() -> str:
    q = load("quality") or {"rows": []}
    held = sorted({r["heldout_examples"] for r in q["rows"] if "heldout_examples" in r})
    calib = sorted({r["calib_examples"] for r in q["rows"] if r.get("seed", 0) == 0})
    methods = ", ".join(f"`{m.name}` {m.label}" for m in METRICS.values())
    lines = [
        "# Benchmarks: which recipe, and how sure we are",
        "",
        "One page: the recommended recipe at 2, 3 and 4 bits, the matched-bits comparison with "
        "the peers, and one verdict per target; the full tables and every paired finding are in "
        "the appendices listed at the end. Every number is read from `bench/results/*.json`, "
        "which the scripts in this folder write; `python bench/tables.py --write` regenerates "
        "this page and the appendices (do not edit them by hand). Each result records the "
        "commit, whether the tree had "
        "uncommitted changes, and the command that produced it. Quality numbers are on each "
        f"task's **held-out** split ({'/'.join(map(str, held)) or '?'} examples per task, never "
        f"used for calibration); calibration uses the first {'/'.join(map(str, calib)) or '?'} "
        "examples of the task's calibration split unless a seed is given (then a seeded random "
        "sample of as many).",
        "",
        "| script | what it measures | last run (date, commit, time) |",
        "|---|---|---|",
        *[f"| `{cmd}` | {what} | {last_run(topic)} |" for cmd, what, topic in SCRIPTS],
        "",
        f"Methods: `rtn` and `gptq` quantize everything; the others run masked GPTQ keeping the "
        f"top 0.35 % of weights (one global ranking) by their score: {methods}. Gap closed = "
        "(NLL_GPTQ − NLL) / (NLL_GPTQ − NLL_fp). Suffixes: `_g128` one scale and zero per 128 "
        "input columns, `_p0.2` keeps 0.20 %, `_d0.1` GPTQ's damping 0.1 (the paper's 0.01), "
        "`_r100` rounding tuned 100 steps per block after GPTQ (`_r100c`: each block's tuning "
        "kept only where held-aside calibration examples' answer loss does not rise; `_clip` "
        "after it: each row's or group's grid ends, so its scale and zero, tuned with the "
        "rounding instead of a scale factor), `_rot` the "
        "unkept weights quantized in a random rotated input basis, the kept ones exact in the "
        "original one (tacq.quant.rotation; a dense Haar rotation), `_roth` the same with a "
        "structured one (random signs, a small Haar matrix Kronecker a Hadamard matrix); "
        "`_e2` before a rotation suffix: every scale then distilled from the fp model for 2 "
        "epochs (tacq.quant.distill), the epoch kept by held-aside calibration examples.",
        "",
    ]
    return "\n".join(lines)


def row_provenance(rows: list[dict]) -> str:
    """Which runs the rows of a merged table come from."""
    runs: dict[str, int] = {}
    for r in rows:
        run = r.get("run")
        key = (
            f"{run['commit']}{' (dirty)' if run['dirty'] else ''} `{' '.join(run['args'])}`"
            if run
            else "an older run that recorded no per-row provenance"
        )
        runs[key] = runs.get(key, 0) + 1
    return "Rows from: " + "; ".join(f"{k} ({n} rows)" for k, n in runs.items()) + "."


def targets(q: dict) -> str:
    """The issue's quality targets, checked on the measured rows (held-out NLL)."""
    rows = [r for r in q["rows"] if r.get("seed", 0) == 0]
    out = [
        "| task | TaCQ best of all 2-bit rows | best baseline (2-bit) | gap closed 2-bit "
        "(target >= 50 %) | 3-bit TaCQ vs fp NLL (target <= +10 %) |",
        "|---|---|---|---|---|",
    ]
    baselines = {*PLAIN_METHODS, *metrics_in("baseline")}
    for task in sorted({r["task"] for r in rows}):
        two = {r["method"]: r for r in rows if r["task"] == task and r["bits"] == 2}
        three = {r["method"]: r for r in rows if r["task"] == task and r["bits"] == 3}
        if "tacq" not in two:
            continue
        others = {m: r["answer_nll"] for m, r in two.items() if m not in ("fp", "tacq")}
        best_m = min(others, key=others.get)
        base = {m: v for m, v in others.items() if m in baselines}
        best_b = min(base, key=base.get)
        t = two["tacq"]["answer_nll"]
        win = "yes" if t < others[best_m] else f"no ({best_m} {others[best_m]:.3f})"
        gap = two["tacq"].get("gap_closed")
        rel = ""
        if "tacq" in three and "fp" in three:
            rel = f"{three['tacq']['answer_nll'] / three['fp']['answer_nll'] - 1:+.0%}"
        out.append(
            f"| {task} | {win}: TaCQ {t:.3f} | {best_b} {base[best_b]:.3f} | "
            f"{'' if gap is None else f'{gap:.0%}'} | {rel} |"
        )
    return "\n".join(out)


def matched_markdown(quality_rows: list[dict], peer_rows: list[dict]) -> str:
    """Ours and the peers on one task and bit width, by honest BPW, with each peer point
    against the best TaCQ point at equal or lower honest BPW, example by example."""
    from quality import _interval, paired_rows, parse_method

    ok = [r for r in peer_rows if "error" not in r]
    out = []
    for task, bits in sorted({(r["task"], r["bits"]) for r in ok}):
        peers = [r for r in ok if (r["task"], r["bits"]) == (task, bits)]
        n = peers[0]["heldout_examples"]
        ours = [
            r
            for r in quality_rows
            if (r["task"], r["bits"], r.get("seed", 0)) == (task, bits, 0)
            and r.get("heldout_examples") == n
            and "nll_each" in r
            and r["method"] != "fp"
        ]
        out += [
            f"**{task}, {bits}-bit** ({n} held-out examples)\n",
            "| method | by | BPW honest | answer NLL | 95 % interval | exact match | "
            "95 % interval | generic ppl | control task NLL | best TaCQ at <= its BPW: NLL "
            "TaCQ - it | 95 % interval | TaCQ better on | decided |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        tacqs = [r for r in ours if parse_method(r["method"])[0] == "tacq"]
        for r in sorted(ours + peers, key=lambda r: r["bpw_honest"]):
            cells = ["", "", "", ""]
            if "peer" in r:
                fit = [t for t in tacqs if t["bpw_honest"] <= r["bpw_honest"]]
                if fit:
                    t = min(fit, key=lambda t: t["answer_nll"])
                    p = paired_rows(t, r)
                    decided = {t["method"]: "TaCQ", r["method"]: r["method"]}.get(p.better, "no")
                    cells = [
                        f"{t['method']}: {p.nll.mean:+.3f}",
                        p.nll.text(),
                        f"{p.a_better:.0%}",
                        decided,
                    ]
                else:
                    cells = ["no TaCQ point at or below this BPW", "", "", ""]
            by = r.get("package", "ours")
            control = f"{r['control_task']} {r['control_nll']:.3f}" if "control_nll" in r else ""
            out.append(
                f"| {r['method']} | {by} | {r['bpw_honest']:.3f} | {r['answer_nll']:.3f} | "
                f"{_interval(r, 'nll_each')} | {r['exact_match']:.3f} | "
                f"{_interval(r, 'correct_each')} | {r['ppl']:.0f} | {control} | "
                + " | ".join(cells)
                + " |"
            )
        out.append("")
    failed = [r for r in peer_rows if "error" in r]
    for r in failed:
        out.append(f"- {r['method']} ({r['task']}, {r['bits']}-bit), no result: {r['error']}")
    return "\n".join(out)


def causal_markdown(rows: list[dict], quality_rows: list[dict]) -> str:
    """Damage-only test per task and damage kind, the verdicts, and the converse from the
    quality rows (only the circuit kept, everything else quantized)."""
    out = [
        "| task | damage | circuit: task NLL change | control task (NLL change) | random, "
        "same count per Linear | random anywhere | largest abs(W) | task hurt more than by "
        "random / by magnitude | task change / control change | seconds (target < 120) | "
        "heads, KV heads, neurons ms (target < 1000) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = {c["weights damaged"]: c for c in r["table"]}
        circ = next(c for k, c in t.items() if k.startswith("circuit"))
        rand = t["random, same count per Linear"]
        anywhere, mag = t["random, anywhere"], t["largest |W| (magnitude)"]
        d = circ["task NLL change"]
        verdict = " / ".join(
            "yes" if d > x else "no" for x in (rand["task NLL change"], mag["task NLL change"])
        )
        verdict += (
            f" | {d / circ['control NLL change']:.2f}" if circ["control NLL change"] else " | -"
        )
        out.append(
            f"| {r['task']} | {r['damage']} | {d:+.3f} (EM {circ['task EM']:.2f}) | "
            f"{r['control']} {circ['control NLL change']:+.3f} | {rand['task NLL change']:+.3f}"
            f" ({rand['spread (task NLL change)']}) | {anywhere['task NLL change']:+.3f} | "
            f"{mag['task NLL change']:+.3f} | {verdict} | {r['seconds']:.0f} | "
            + ", ".join(f"{v:.0f}" for v in r.get("anatomy_ms", {}).values())
            + " |"
        )
    kept = [
        q
        for q in quality_rows
        if q["method"] in ("random", "magnitude", "tacq") and q.get("seed", 0) == 0
    ]
    tasks = sorted({q["task"] for q in kept if q["method"] == "random"})
    if tasks:
        out += [
            "",
            "Converse: only these weights kept at full precision, everything else quantized "
            "(masked GPTQ, p = 0.35 %), held-out answer NLL:\n",
            "| task | bits | random kept | largest abs(W) kept | TaCQ circuit kept |",
            "|---|---|---|---|---|",
        ]
        for task in tasks:
            with_random = {q["bits"] for q in kept if (q["task"], q["method"]) == (task, "random")}
            for bits in sorted(with_random):
                cell = {q["method"]: q for q in kept if (q["task"], q["bits"]) == (task, bits)}
                vals = [
                    f"{cell[m]['answer_nll']:.3f}" if m in cell else "-"
                    for m in ("random", "magnitude", "tacq")
                ]
                out.append(f"| {task} | {bits} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def fit_markdown(fit: dict) -> str:
    """One auto-fit per task (bench/fit.py): what it chose, at what size, how it held on
    held-out, and what the search cost. Also the README's table (README_FIT markers)."""
    lines = [
        f"`python -m tacq fit --task NAME --keep {fit['keep']:g}` with cold caches: candidates "
        "scored on dev in increasing honest bits per weight; the choice scored once on held-out. "
        "The speed probe (`tacq.study.demo.speed_probe`, a fixed GPTQ job; about 0.17 s on the "
        "development machine) says how fast the machine ran then (- : not recorded).",
        "",
        "| task | chosen | bits | honest BPW | dev EM (fp) | held-out EM (fp) | held-out EM kept "
        "| candidates scored | wall (min) | speed probe (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(fit["rows"], key=lambda r: r["task"]):
        probe = f"{r['speed_probe_s']:.3f}" if "speed_probe_s" in r else "-"
        best = max(r["points"], key=lambda p: p["dev_em"], default=None)
        if r["chosen"] is None:
            chosen = "none" + (
                f" (best dev EM {best['dev_em']:.3f}, {best['name']})" if best else ""
            )
            bits = bpw = held = kept = "-"
            dev = f"- ({r['fp_dev_em']:.3f})"
        else:
            c = next(p for p in r["points"] if p["name"] == r["chosen"])
            h = r.get("heldout")
            chosen, bits, bpw = c["name"], str(c["bits"]), f"{c['bpw_honest']:.3f}"
            dev = f"{c['dev_em']:.3f} ({r['fp_dev_em']:.3f})"
            held = f"{h['em']:.3f} ({h['fp_em']:.3f})" if h else "-"
            kept = f"{100 * h['em_kept']:.0f} %" if h and h["em_kept"] is not None else "-"
        lines.append(
            f"| {r['task']} | {chosen} | {bits} | {bpw} | {dev} | {held} | {kept} "
            f"| {len(r['points'])} | {r['wall_s'] / 60:.1f} | {probe} |"
        )
    missing = sorted(set(list_tasks()) - {r["task"] for r in fit["rows"]})
    if missing:
        lines += ["", f"Not measured yet: {', '.join(missing)} (`python bench/fit.py --tasks "
                  f"{','.join(missing)}`, about 15 min each on this CPU)."]  # fmt: skip
    return "\n".join(lines)


README_FIT = ("<!-- fit table: python bench/tables.py --write -->", "<!-- end of fit table -->")
README_DEMO = (
    "<!-- demo figures: python bench/tables.py --write -->",
    "<!-- end of demo figures -->",
)


def demo_markdown(dt: dict) -> str:
    """The README's measured demo sentence, from bench/results/demo_time.json."""
    first = {r["mode"]: r for r in dt["runs"] if r["attempt"] == "first run, empty caches"}
    both = next((r for r in dt["runs"] if r["attempt"].startswith("both")), None)
    times = ", ".join(
        f"{mode} {r['actual_s']:.0f} s (expected {r['expected_s']:.0f} s)"
        for mode, r in first.items()
    )
    full = first.get("full") or next(iter(first.values()))
    em = ", ".join(f"{name} {v:.2f}" for name, v in full["heldout_em"].items())
    right = ", ".join(f"{name} {k}" for name, k in full["gallery_right"].items())
    out = (
        f"Measured on a 2-core CPU with empty caches (`python bench/demo_time.py`, the app's "
        f"thread setting, TaCQ `{full.get('recipe', 'tacq_p0.5')}`, speed probe "
        f"{dt['probe_s']:.3f} s): {times}. Held-out exact "
        f"match of the {full['mode']} demo: {em}; right answers in its gallery of 10: {right}."
    )
    if both:
        fits = both["actual_s"] <= dt["quick_limit_s"]
        out += (
            f" The quick demo with both GPTQ baselines took {both['actual_s']:.0f} s, "
            + ("within" if fits else "over")
            + f" its {dt['quick_limit_s']} s, so *Quick* makes "
            + ("both." if fits else "GPTQ g128 only.")
        )
    return out


def _replace_between(text: str, markers: tuple[str, str], body: str, indent: str = "") -> str:
    """text with the lines between the two markers replaced by body (indented: inside a
    list item)."""
    start, end = markers
    if start not in text:
        return text
    head, rest = text.split(start, 1)
    body = "\n".join(indent + line for line in body.splitlines())
    return f"{head}{start}\n{body}\n{indent}{end}{rest.split(end, 1)[1]}"


def readme_with_fit(text: str) -> str:
    """The project README with its generated parts rewritten from bench/results: the
    auto-fit table (fit.json) and the demo's measured figures (demo_time.json)."""
    fit, dt = load("fit"), load("demo_time")
    if fit is not None:
        text = _replace_between(text, README_FIT, fit_markdown(fit))
    if dt is not None:
        text = _replace_between(text, README_DEMO, demo_markdown(dt), indent="   ")
    return text


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


def _off(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * (ratio - 1):+.0f} %"


def scale_markdown(sc: dict) -> str:
    """Per stage and shape: time, peak RSS, bytes written; growth exponents; the plan's
    estimate of each of its stages against the measured stages it covers."""
    from scale import BITS, PLAN_STAGES, TIMED_PLAN_STAGES

    rows = sc["rows"]
    r0 = rows[0]
    out = [
        f"Random fp32 weights built from each model's config (quality means nothing here; "
        f"time and memory only), {r0['examples']} calibration examples of {r0['task']} "
        f"({', '.join(str(r['calib_tokens']) for r in rows)} tokens: the 32k-vocabulary "
        "shape uses the bundled SmolLM2 tokenizer cut to its first 32,000 ids, so a few "
        f"more), TaCQ {BITS}-bit at p = 0.35 %, {r0['new_tokens']} tokens of "
        "chat; each shape in its own process from empty caches. Cells: wall time, peak RSS "
        "(VmHWM, reset at each stage's start), bytes written to the cache or the saved "
        "variant. Exponents: least-squares slope of log time / log peak RSS against log "
        "parameters over the three shapes.\n",
        "| stage | "
        + " | ".join(f"{r['shape']} ({r['params'] / 1e6:,.0f} M)" for r in rows)
        + " | exponent, time | exponent, peak RSS |",
        "|---" * (len(rows) + 3) + "|",
    ]
    for stage in r0["stages"]:
        e = sc["exponents"].get(stage, {"time": math.nan, "peak_rss": math.nan})
        cells = [
            f"{r['stages'][stage]['seconds']:.1f} s, {_gb(r['stages'][stage]['peak_rss_bytes'])}"
            f", {r['stages'][stage]['disk_bytes'] / 2**20:,.0f} MB"
            for r in rows
        ]
        out.append(
            f"| {stage} | " + " | ".join(cells) + f" | {e['time']:.2f} | {e['peak_rss']:.2f} |"
        )
    out.append(
        "| **whole path** | "
        + " | ".join(
            f"**{r['total_s']:.0f} s, {_gb(r['peak_rss_bytes'])}** "
            f"({r['peak_rss_bytes'] / r['fp32_bytes']:.2f}x fp32)"
            for r in rows
        )
        + " | | |"
    )
    used = sc["time_factors_in_plan"]
    fitted = sc["fitted_time_factors"]
    out += [
        "",
        "`tacq plan` for the same shape and settings on this CPU, with the matmul throughput "
        "measured just before the shape ran and the calibration set's real length (its "
        "longest batch; the plan's default of 256 tokens per example is an upper bound, last "
        "column). Its stages cover: "
        + "; ".join(f"{p} = {' + '.join(parts)}" for p, parts in PLAN_STAGES.items())
        + ". Time factors in tacq/study/plan.py: "
        + ", ".join(
            f"{k} {v:.2f} (fitted {fitted.get(k, float('nan')):.2f})" for k, v in used.items()
        )
        + ", fitted on the two SmolLM2 shapes; the plan gives the packed variant no time.\n",
        "| shape | plan stage | measured | plan | off | measured peak | plan | off | "
        "plan at 256 tokens |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for stage, m in r["measured"].items():
            p, off = r["plan"][stage], r["estimate_over_measured"][stage]
            timed = stage in TIMED_PLAN_STAGES
            out.append(
                f"| {r['shape']} | {stage} | {m['seconds']:.0f} s | "
                + (f"{p['seconds']:.0f} s" if timed else "-")
                + f" | {_off(off['seconds'])} | {_gb(m['bytes'])} | {_gb(p['bytes'])} | "
                f"{_off(off['bytes'])} | {_gb(r['plan_at_cap'][stage]['bytes'])} |"
            )
    t = sc.get("targets")
    if t:
        worst_mem = max(t["memory_off"].items(), key=lambda kv: abs(kv[1]))
        worst_time = max(t["time_off"].items(), key=lambda kv: abs(kv[1]))
        out += [
            "",
            f"Targets on {t['shape']}: the whole path runs in **{t['total_s'] / 60:.1f} min**; "
            f"peak RSS **{t['peak_rss_over_fp32']:.2f}x** the fp32 weights (target <= "
            f"{t['rss_limit_over_fp32']}x: {'met' if t['rss_met'] else 'not met'}); the plan's "
            f"memory within {_off(1 + worst_mem[1])} ({worst_mem[0]}) of the measured peak "
            f"at worst (target +-25 %: {'met' if t['memory_met'] else 'not met'}); its time "
            f"within {_off(1 + worst_time[1])} ({worst_time[0]}) at worst (target +-50 %: "
            f"{'met' if t['time_met'] else 'not met'}).",
        ]
    if (RESULTS / "scale.png").exists():
        out += ["", "![Time and peak RSS per stage against parameters](scale.png)"]
    return "\n".join(out)


APPENDICES = [  # (file under bench/results, title)
    ("findings", "What the numbers say: every finding, met and open"),
    ("quality", "Quality on held-out: every method, paired comparisons, targets, cross-task"),
    ("peers", "Peers at matched bits: every AutoRound and HQQ point against TaCQ"),
    ("circuit", "Is the circuit a task circuit? Causal test, ablations, ratio sweep"),
    ("app", "Auto-fit and the one-click demo"),
    ("systems", "Speed, memory, scaling, uploads, the slider, packed variants, GPUs"),
]


def sections() -> dict[str, list[str]]:
    """Every table, from the JSON files, by appendix; missing results are skipped."""
    pages: dict[str, list[str]] = {name: [] for name, _ in APPENDICES}

    q = load("quality")
    emit = pages["quality"].append
    if q:
        emit("## Quality (held-out, p = 0.35 %)\n")
        emit(env_line(q) + "\n")
        emit(markdown(q["rows"]) + "\n")
        emit(row_provenance(q["rows"]) + "\n")
        pairs = paired_markdown(q["rows"])
        if pairs:
            emit("### Paired: TaCQ against each method on the same held-out examples\n")
            emit(
                "Per-example answer NLL difference A - B (negative: A better), its 95 % "
                "bootstrap interval, and the share of examples where A's NLL is lower; "
                "'decided' when the interval excludes zero.\n"
            )
            emit(pairs + "\n")
        emit("### Targets\n")
        emit(targets(q) + "\n")
        if q.get("cross_task"):
            emit("### Cross-task: calibrate on one task, evaluate on another (2-bit)\n")
            emit(cross_markdown(q["cross_task"]) + "\n")
    pe = load("peers")
    emit = pages["peers"].append
    if pe:
        emit("## Peers at matched bits: AutoRound and HQQ, run by their own packages\n")
        emit(env_line(pe) + "\n")
        settings = {
            (r["peer"], r["bits"], r["group_size"]): r for r in pe["rows"] if "error" not in r
        }
        for (peer, bits, group), r in sorted(settings.items()):
            used = r.get("used") or {}
            used_text = f"; used {used['samples']} samples, {used['tokens']} tokens" if used else ""
            emit(
                f"- {peer} {bits}-bit g{group}: {r['package']}, {r['seconds']:.0f} s, "
                f"settings {json.dumps(r['settings'])}{used_text}"
            )
        emit("")
        emit(matched_markdown(q["rows"] if q else [], pe["rows"]) + "\n")
        if (RESULTS / "pareto.png").exists():
            emit(
                "![Held-out answer NLL against honest BPW](pareto.png)\n\n"
                "(`python bench/pareto.py`; interactive: pareto.html)\n"
            )
    c = load("causal")
    emit = pages["circuit"].append
    if c:
        emit("## Is the circuit a task circuit? The causal test\n")
        emit(env_line(c) + "\n")
        emit(
            "Only the TaCQ circuit (2-bit scores, p = 0.35 %) is damaged, everything else at "
            "full precision; NLL changes are against the undamaged model on the first "
            f"{c['rows'][0]['scored']} held-out examples of the task and of the control task "
            "(`python bench/causal.py`).\n"
        )
        emit(causal_markdown(c["rows"], q["rows"] if q else []) + "\n")
    ab = load("ablations")
    if ab:
        emit("### Ablations: answer-only loss, more examples (2-bit, p = 0.35 %)\n")
        emit("| task | config | method | examples | answer NLL | exact match | gap closed |")
        emit("|---|---|---|---|---|---|---|")
        for r in ab["rows"]:
            emit(
                f"| {r['task']} | {r['config']} | {r['method']} | {r['calib_examples']} | "
                f"{r['answer_nll']:.3f} | {r['exact_match']:.3f} | {r['gap_closed']:.0%} |"
            )
        if ab.get("sweep"):
            emit("\n### TaCQ outlier-ratio sweep\n")
            emit("| task | bits | ratio | BPW | answer NLL | vs fp | exact match |")
            emit("|---|---|---|---|---|---|---|")
            for r in ab["sweep"]:
                emit(
                    f"| {r['task']} | {r['bits']} | {100 * r['ratio']:.2f}% | {r['bpw']:.3f} | "
                    f"{r['answer_nll']:.3f} | {r['answer_nll'] / r['fp_nll'] - 1:+.0%} | "
                    f"{r['exact_match']:.3f} |"
                )
        emit("")
    s = load("speed")
    emit = pages["systems"].append
    if s:
        emit("## Pipeline speed and memory\n")
        emit(env_line(s) + "\n")
        old = s.get("stages_old_s")
        if old:
            emit("| stage | old GPTQ path, s | fast GPTQ path, s |\n|---|---|---|")
            for k, v in s["stages_s"].items():
                emit(f"| {k} | {old.get(k, float('nan')):.1f} | {v:.1f} |")
            emit(
                f"| **total** (target < 300) | **{s['end_to_end_old_s']:.1f}** | "
                f"**{s['end_to_end_s']:.1f}** (x{s['end_to_end_speedup']:.2f}, target 1.6) |\n"
            )
            emit(
                f"- held-out TaCQ 2-bit NLL: old {s['heldout_nll_variant_old']:.4f}, "
                f"new {s['heldout_nll_variant']:.4f} (the paths are bit-identical)"
            )
            g = s["gptq_compare"]
            emit(
                f"- GPTQ over the whole model, same batches: unmasked {g['unmasked_old_s']:.1f} s"
                f" -> {g['unmasked_new_s']:.1f} s (x{g['unmasked_speedup']:.2f}), masked TaCQ "
                f"{g['masked_old_s']:.1f} s -> {g['masked_new_s']:.1f} s "
                f"(x{g['masked_speedup']:.2f}; {100 * g['rows_searched_again_share']:.0f} % of "
                f"rows hold a kept weight and are searched again), both x{g['pair_speedup']:.2f}"
                f" (target 2); codes bit-identical: {g['bit_identical']}"
            )
            d_old, d_new = s["demo_quick_old"], s["demo_quick_new"]
            emit(
                f"- quick one-click demo: {d_old['total_s']:.1f} s -> {d_new['total_s']:.1f} s "
                f"(x{s['demo_quick_speedup']:.2f}, target 1.9)"
            )
        else:
            emit("| stage | seconds |\n|---|---|")
            for k, v in s["stages_s"].items():
                emit(f"| {k} | {v:.1f} |")
            emit(f"| **total** (target < 300) | **{s['end_to_end_s']:.1f}** |\n")
        emit(f"- peak RSS of the whole pipeline: **{s['peak_rss_mb']:,.0f} MB** (target < 4096)")
        emit(
            f"- GPTQ: {s['gptq_model_s']:.1f} s for the whole model, "
            f"{s['gptq_per_block_s']:.2f} s per decoder block"
        )
        emit(
            f"- gradients on {s['grads_examples']} examples: batched {s['grads_batched_s']:.2f} s"
            f" vs batch-size-1 autograd loop {s['grads_loop_s']:.2f} s -> "
            f"**x{s['grads_speedup']:.2f}** (target >= 3), max relative difference "
            f"{s['grads_max_rel_diff']:.1e} (target <= 1e-4)\n"
        )
    fit = load("fit")
    if fit:
        emit = pages["app"].append
        emit("## Auto-fit: the smallest variant that keeps each task\n")
        emit(env_line(fit) + "\n")
        emit(fit_markdown(fit) + "\n")
    sc = load("scale")
    emit = pages["systems"].append
    if sc:
        emit("## Scaling: the default path on random Llama shapes\n")
        emit(env_line(sc) + "\n")
        emit(scale_markdown(sc) + "\n")
    m = load("upload_memory")
    if m:
        emit("## Reading a 20 MB upload\n")
        emit(env_line(m) + "\n")
        emit("| shape | extra memory MB | seconds | outcome |\n|---|---|---|---|")
        for k, r in m["shapes"].items():
            emit(f"| {k} | {r['extra_mb']:.0f} | {r['seconds']:.2f} | {r['outcome']} |")
        emit(f"\nWorst {m['worst_extra_mb']:.0f} MB extra (target <= {m['target_mb']}).\n")
    o = load("omp_wait")
    if o and "seconds" in o and isinstance(next(iter(o["seconds"].values())), dict):
        emit("## OpenMP wait policy\n")
        emit(env_line(o) + "\n")
        emit("| policy, thread, load | GPTQ 1536x576 2-bit s | grad products of one block ms "
             "| chat step beside it ms |")  # fmt: skip
        emit("|---|---|---|---|")
        for k, v in o["seconds"].items():
            step = f"{v['chat_step_ms']:.2f}" if "chat_step_ms" in v else ""
            emit(f"| {k} | {v['gptq_1536x576_s']:.2f} | {v['grads_block_s'] * 1000:.1f} | {step} |")
        emit("")
    sel = load("selection")
    if sel:
        emit("## Slider and selection\n")
        emit(env_line(sel) + "\n")
        emit(
            f"- new ratio (counts, BPW, sizes): median **{sel['new_ratio_median_ms']:.2f} ms**"
            f" (target < 50), x{sel['speedup_vs_resort']:,.0f} faster than re-sorting "
            f"({sel['rank_once_ms']:,.0f} ms)"
        )
        emit(
            f"- full keep masks at a ratio: {sel['masks_median_ms']:.1f} ms; the app's whole "
            f"slider handler (table + heatmap + bars + sizes): median "
            f"{sel['render_median_ms']:.1f} ms, p95 {sel['render_p95_ms']:.1f} ms"
        )
    sl = load("slider_app")
    if sl:
        emit(
            f"- through the running app in chromium, release to redrawn heatmap: median "
            f"**{sl['median_ms']:.0f} ms**, p95 {sl['p95_ms']:.0f} ms over {sl['moves']} moves"
            f" (target < 300)\n"
        )
    hl = load("health_latency")
    if hl:
        emit(
            f"Health check under load: `/healthz` while {hl['sessions']} browser sessions "
            f"chat and one more quantizes: p50 "
            f"{hl['p50_ms']:.0f} ms, p95 {hl['p95_ms']:.0f} ms, max {hl['max_ms']:.0f} ms over "
            f"{hl['checks']} checks ({hl['failed']} failed)\n"
        )
    a = load("accumulators")
    if a:
        emit("## Low-memory gradient accumulators (SmolLM2, p = 0.35 %)\n")
        emit("| metric | kept weights | top-k overlap, fp32 sums on host | bf16 sums |")
        emit("|---|---|---|---|")
        for m, d in a["metrics"].items():
            o = d["top_k_overlap_vs_fp32"]
            emit(f"| {m} | {d['k']:,} | {o['fp32 on host']:.4f} | {o['bf16']:.4f} |")
        emit(f"\nbf16 sums: max relative error of G {a['bf16_max_rel_error_of_G']:.1e}.\n")
    dp = load("demo_pick")
    emit = pages["app"].append
    if dp:
        emit("## One-click demo: which task and TaCQ recipe, measured on dev\n")
        emit(env_line(dp) + "\n")
        emit(
            "Exact match on the first dev examples (never the held-out split the demo "
            "reports) of TaCQ 2-bit at each recipe (a `tacq.quant.recipe` key: `tacq` is the "
            "paper's settings at 0.35 %, `_p` another kept percent, `_d0.1_roth` the measured "
            "preset's damping and Hadamard rotation) and of the demo's GPTQ 2-bit baselines, "
            "per channel and g128 (- where not measured); TaCQ 3-bit (same recipe) only "
            "with the full demo's examples. `python bench/demo_pick.py`.\n"
        )
        emit(
            "| task | examples | TaCQ recipe | honest BPW | fp | TaCQ 3-bit | TaCQ 2-bit | "
            "GPTQ 2-bit | GPTQ 2-bit g128 | TaCQ - GPTQ |"
        )
        emit("|---|---|---|---|---|---|---|---|---|---|")
        rows = sorted(
            dp["rows"], key=lambda r: (r["task"], r["examples"], r["ratio"], recipe_key(r))
        )
        for r in rows:
            t3 = "-" if r["tacq3_em"] is None else f"{r['tacq3_em']:.2f}"
            g128 = r.get("gptq2_g128_em")
            g128 = "-" if g128 is None else f"{g128:.2f} ({r['gptq2_g128_bpw']:.3f} BPW)"
            emit(
                f"| {r['task']} | {r['examples']} | `{recipe_key(r)}` | "
                f"{r['bpw_honest']:.3f} | {r['fp_em']:.2f} | {t3} | {r['tacq2_em']:.2f} | "
                f"{r['gptq2_em']:.2f} | {g128} | {r['tacq2_em'] - r['gptq2_em']:+.2f} |"
            )
        p = dp["pick"]
        g = p.get("worst_g128_difference")
        g = "" if g is None else f", {g:+.2f} over GPTQ 2-bit g128"
        emit(
            f"\nPick: **{p['task']}** with `{recipe_key(p)}` (honest BPW "
            f"{p['bpw_honest']:.3f}); in its worse mode TaCQ 2-bit exact match "
            f"{p['worst_tacq2_em']:.2f}, {p['worst_difference']:+.2f} over GPTQ 2-bit per "
            f"channel{g} (target >= 0.5 and >= +0.4 over per channel: "
            f"{'met' if p['meets_target'] else 'not met'}).\n"
        )
    dt = load("demo_time")
    if dt:
        emit("## One-click demo: expected against measured time\n")
        emit(env_line(dt) + "\n")
        emit(
            f"A fresh $TACQ_HOME (empty caches), the default task, {dt['threads']} threads; "
            f"speed probe {dt['probe_s']:.3f} s. First run: expected times are the first guess "
            "(scaled by the probe); second run (caches filled): the guess for filled caches; later runs "
            "of either kind expect what the last run of that kind took. "
            "`python bench/demo_time.py`.\n"
        )
        emit("| demo | run | expected s | measured s | off | worst stage off |")
        emit("|---|---|---|---|---|---|")
        for r in dt["runs"]:
            worst = max(r["stages"], key=lambda s: abs(s["off"]))
            if "variants" in r:
                r = {**r, "mode": f"{r['mode']} ({', '.join(r['variants'])})"}
            emit(
                f"| {r['mode']} | {r['attempt']} | {r['expected_s']:.0f} | {r['actual_s']:.0f} | "
                f"{100 * r['off']:+.0f} % | {worst['stage']} {100 * worst['off']:+.0f} % |"
            )
        emit("")
    pk = load("packed")
    emit = pages["systems"].append
    if pk:
        emit("## Packed variants in memory (SmolLM2, TaCQ p = 0.35 %)\n")
        emit(env_line(pk) + "\n")
        emit(
            f"What each variant holds beyond the original it shares tensors with, against "
            f"the {pk['fp16_linear_mb']:.1f} MB of its quantizable Linears in fp16 (target "
            "<= 20 % at 2 bits); the RSS change when the export is loaded back onto the "
            "original cross-checks it.\n"
        )
        emit("| variant | in memory MB | share of fp16 Linears | RSS change MB | packed file MB |")
        emit("|---|---|---|---|---|")
        for k, m in pk["memory"].items():
            name = m.get("variant", k)
            file_mb = f"{m['packed_file_mb']:.1f}" if "packed_file_mb" in m else "-"
            emit(
                f"| {name} | {m['resident_mb']:.1f} | {100 * m['share_of_fp16_linears']:.1f} % "
                f"| {m['rss_change_mb']:.1f} | {file_mb} |"
            )
        emit(
            f"\nChat speed, greedy, batch 1, {pk['new_tokens']} new tokens after "
            f"{pk['prompt']!r} (median of 3):\n"
        )
        emit("| model | tokens/s | vs dense 2-bit copy | first token s | compile s |")
        emit("|---|---|---|---|---|")
        for k, m in pk["speed"].items():
            comp = f"{m['compile_s']:.1f}" if "compile_s" in m else "-"
            emit(
                f"| {k} | {m['tokens_per_s']:.1f} | {m['vs_dense']:.2f} | "
                f"{m['first_token_s']:.3f} | {comp} |"
            )
        emit("")
    g = load("large_gpu")
    emit("## Large model on a GPU\n")
    if g:
        emit(
            f"{env_line(g)}: gradients {g['grad_s_per_1k_tokens']:.3f} s per 1k tokens "
            f"(peak {g['grad_peak_gb']:.1f} GB); GPTQ {g['gptq_s_per_block']:.1f} s per block "
            f"(peak {g['gptq_peak_gb']:.1f} GB); extrapolated full run "
            f"{g['extrapolated_total_min']:.1f} min."
        )
    else:
        emit("Not measured: no GPU was available. `python bench/large_gpu.py` is ready.")
    return pages


APPENDIX_NOTE = (
    "Generated by `python bench/tables.py --write` from `bench/results/*.json` (do not edit "
    "by hand); the one-page summary is [bench/README.md](../README.md)."
)


def readme_pages() -> dict[str, str]:
    """Path under bench/ -> text: the one-page README and its appendices."""
    results = {p.stem: load(p.stem) for p in sorted(RESULTS.glob("*.json"))}
    pages = sections()
    pages["findings"] = findings(results).split("\n")[1:]  # less its own heading
    out = {"README.md": page(results, header(), APPENDICES)}
    for name, title in APPENDICES:
        body = "\n".join(pages[name]).strip()
        out[f"results/{name}.md"] = f"# {title}\n\n{APPENDIX_NOTE}\n\n{body}\n"
    return out


def readme() -> str:
    """The one-page bench/README.md."""
    return readme_pages()["README.md"]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--write", action="store_true", help="rewrite bench/README.md and its appendices"
    )
    pages = readme_pages()
    if ap.parse_args().write:
        for path, text in pages.items():
            (ROOT / "bench" / path).write_text(text, encoding="utf-8")
            print(f"wrote bench/{path} ({len(text.splitlines())} lines)")
        top = ROOT / "README.md"
        top.write_text(readme_with_fit(top.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(pages["README.md"], end="")


if __name__ == "__main__":
    main()
