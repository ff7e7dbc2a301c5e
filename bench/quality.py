"""Held-out quality of every method at the same BPW budget, on the real SmolLM2.

For each task and bit width: fp, RTN, GPTQ, and masked GPTQ keeping p = 0.35 % chosen by
|W| (magnitude), Fisher, sum|g|, SpQR-like, SqueezeLLM-like, MSG, QAL and TaCQ. Metrics on
the task's held-out split (never used for calibration): answer NLL, exact match, KL to fp;
perplexity on assets/text/generic.txt; answer NLL on a control task (the first other
bundled task, 64 held-out examples); gap closed = (NLL_GPTQ - NLL) / (NLL_GPTQ - NLL_fp).
Packed sizes of the TaCQ variants are written too.

    python bench/quality.py                       # antonyms, bits 2 and 3, all methods
    python bench/quality.py --tasks antonyms,capitals --bits 2 --methods gptq,gptq_g128,tacq
A method name ending in _g32/_g64/_g128/_g256 runs it group-wise (one scale and zero per
that many input columns); a final _p0.25 keeps 0.25 % instead of 0.35 % (tacq_p0.25,
tacq_g128_p0.1), for points at a peer's honest bits per weight; a last _d0.1 sets GPTQ's
Hessian damping (default 0.01; tacq_d0.1, tacq_p0.2_d0.1, gptq_g128_d0.1); then _r100
tunes the unkept weights' rounding after GPTQ for that many steps per block (tacq.quant.rounding),
on the calibration examples plus the generic text perplexity does not read
(tacq_p0.2_d0.1_r100; _r100c keeps a block's tuning only where held-aside calibration
examples' answer loss does not rise); a final _rot quantizes the unkept weights by GPTQ in a
random rotated input basis, the kept ones staying exact in the original one (tacq.quant.rotation;
tacq_d0.1_rot, gptq_d0.1_rot; tuned rounding then works on the rotated grid:
tacq_g64_d0.1_r100c_roth); an _e2 before any rotation suffix then distils every scale from the
fp model for that many epochs on the calibration examples (less every 4th batch, which
picks the epoch kept) plus the generic text perplexity does not read (tacq.quant.distill;
tacq_g64_d0.1_e2_roth). Each row keeps its per-example NLL and exact match, so the tables show
95 % bootstrap intervals and paired comparisons (bench/tables.py), and its answer NLL and
exact match on the task's dev split (never calibration, never held-out), by which a
matched-bits point is picked.
Writes bench/results/quality.json (merged per task/bits) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import ROOT, stamp, write_result

from tacq.circuit.saliency import metrics_in
from tacq.circuit.select import DEFAULT_RATIO
from tacq.errors import TacqError
from tacq.formats.grid import DEFAULT_DAMP, GROUP_SIZES
from tacq.quant.recipe import FIT_TEXTS, Recipe
from tacq.study.runs import PLAIN_METHODS

# Table order: plain quantizers, the baseline metrics, then the paper's (TaCQ last);
# group-wise rows after the per-channel ones.
PER_CHANNEL = [
    "fp",
    *PLAIN_METHODS,
    *metrics_in("control"),
    *metrics_in("baseline"),
    *reversed(metrics_in("paper")),
]
ALL = PER_CHANNEL + [f"{m}_g{g}" for g in GROUP_SIZES for m in PER_CHANNEL if m != "fp"]


ROTATED = "_rot"  # the dense (Haar) basis's suffix; _roth is the Hadamard one


def recipe_of(name: str) -> Recipe | None:
    """The tacq.quant.recipe.Recipe a method key names (its bits left at 2), or None: 'fp', or
    text that is not a key. A key is known only in its one written form (from_key then
    key() gives it back), e.g. not 'rtn_d0.1': RTN has no damping."""
    try:
        recipe = Recipe.from_key(name)
    except TacqError:
        return None
    base = recipe.metric if recipe.ratio else recipe.method
    table = (f"{base}_g{recipe.group_size}" if recipe.group_size else base) in ALL
    return recipe if table and recipe.key() == name else None


def _key(name: str, *edits: Callable[[Recipe], Recipe], **changes) -> str:
    """The key of the same recipe with some Recipe methods applied (e.g.
    Recipe.without_rounding) and some fields changed ('fp' and unknown names as they are)."""
    recipe = recipe_of(name)
    if recipe is None:
        return name
    for edit in edits:
        recipe = edit(recipe)
    return recipe.changed(**changes).key()


def rotation_kind(name: str) -> str | None:
    """'tacq_d0.1_rot': the unkept weights quantized by GPTQ in a random rotated input basis
    (a dense Haar one; _roth a structured Hadamard one), the kept ones exact in the original
    basis (tacq.quant.rotation). None: not rotated."""
    recipe = recipe_of(name)
    return recipe.rotation if recipe else None


def rotated(name: str) -> bool:
    return rotation_kind(name) is not None


def unrotated(name: str) -> str:
    """The same method in the original basis: 'tacq_d0.1_roth' -> 'tacq_d0.1'."""
    return _key(name, rotation=None)


def split_distill(name: str) -> tuple[str, int | None]:
    """'tacq_g64_d0.1_e2_roth' -> ('tacq_g64_d0.1', 2): the epochs of scales distilled from
    the fp model (tacq.quant.distill), and the key without them or a rotation."""
    recipe = recipe_of(name)
    epochs = recipe.distill_epochs if recipe else 0
    return _key(name, distill_epochs=0, rotation=None), epochs or None


def split_rounding(name: str) -> tuple[str, int | None]:
    """'tacq_d0.1_r200' -> ('tacq_d0.1', 200): steps of tuned rounding after GPTQ (None:
    GPTQ's rounding), and the key without it, distillation or a rotation."""
    recipe = recipe_of(name)
    steps = recipe.rounding_steps if recipe else 0
    return _key(name, Recipe.without_rounding, distill_epochs=0, rotation=None), steps or None


def rounding_checked(name: str) -> bool:
    """'tacq_r100c': a block's tuned rounding is kept only where the model's answer loss on
    held-aside calibration examples does not rise (tacq.quant.rounding.tune_rounding's check)."""
    recipe = recipe_of(name)
    return bool(recipe and recipe.rounding_check)


def undistilled(name: str) -> str:
    """The same method without distilled scales: 'tacq_d0.1_e2_roth' -> 'tacq_d0.1_roth'."""
    return _key(name, distill_epochs=0)


def unrounded(name: str) -> str:
    """The same method with GPTQ's rounding: 'tacq_d0.1_r100c_e2_roth' -> 'tacq_d0.1_e2_roth'."""
    return _key(name, Recipe.without_rounding)


def unchecked(name: str) -> str:
    """The same tuned rounding without the held-aside check: 'tacq_r100c_roth' ->
    'tacq_r100_roth'."""
    return _key(name, rounding_check=False)


def unclipped(name: str) -> str:
    """The same checked rounding without its grid ends tuned: 'tacq_r100c_clip_roth' ->
    'tacq_r100c_roth'."""
    return _key(name, rounding_clip=False)


def split_damp(name: str) -> tuple[str, float | None]:
    """'tacq_p0.2_d0.1' -> ('tacq_p0.2', 0.1): GPTQ's Hessian damping (None: the default,
    tacq.formats.grid.DEFAULT_DAMP), and the key without it or any later suffix."""
    recipe = recipe_of(name)
    damp = recipe.damp if recipe and recipe.damp != DEFAULT_DAMP else None
    rest = _key(name, Recipe.without_gptq_levers, distill_epochs=0, fit_text=FIT_TEXTS[0])
    return rest, damp


def parse_method(name: str) -> tuple[str, int | None, float | None]:
    """'gptq_g128' -> ('gptq', 128, None); 'tacq_p0.25' -> ('tacq', None, 0.0025).

    The ratio is None for the default (the paper's 0.35 %) and for plain quantizers; later
    suffixes are ignored here. 'fp' and unknown names come back whole.
    """
    recipe = recipe_of(name)
    if recipe is None:
        return name, None, None
    base = recipe.metric if recipe.ratio else recipe.method
    ratio = recipe.ratio if recipe.ratio not in (0.0, DEFAULT_RATIO) else None
    return base, recipe.group_size, ratio


def preset_of(name: str) -> Recipe | None:
    """A TaCQ method key as the recipe it stands for (at 2 bits): 'tacq_p0.2_d0.1_roth'
    -> Recipe(ratio=0.002, damp=0.1, rotation='hadamard'); None for any other method."""
    recipe = recipe_of(name)
    return recipe if recipe and recipe.ratio and recipe.metric == "tacq" else None


def known_method(name: str) -> bool:
    """'fp', or a key of a recipe the tables can show (see recipe_of)."""
    return name == "fp" or recipe_of(name) is not None


def method_order(name: str) -> tuple[int, float, float, int, bool, bool, int, int]:
    """Table position: the method's place in ALL, ratios after their default row, then
    damping after the default damping, then tuned rounding after GPTQ's (with the grid's
    ends after without), rotated last."""
    base, group, ratio = parse_method(name)
    recipe = recipe_of(name)
    return (
        ALL.index(f"{base}_g{group}" if group else base),
        ratio or 0.0,
        split_damp(name)[1] or 0.0,
        split_rounding(name)[1] or 0,
        rounding_checked(name),
        bool(recipe and recipe.rounding_clip),
        split_distill(name)[1] or 0,
        (None, "haar", "hadamard").index(rotation_kind(name)),
    )


def per_example(result) -> dict:
    """Per-example answer NLL (4 places) and exact match, for intervals and paired tests."""
    from tacq.eval.stats import per_example as values

    nll, correct = values(result)
    return {"nll_each": [round(x, 4) for x in nll], "correct_each": [int(c) for c in correct]}


def dev_scores(result) -> dict:
    """A row's dev-split answer NLL and exact match: what a point is picked by."""
    return {
        "examples": len(result.rows),
        "answer_nll": result.answer_nll,
        "exact_match": result.exact_match,
    }


def fit_tokens(study, recipe: Recipe, v) -> dict:
    """What a row's fitting passes saw (tokens fitted on and checked on) and what they
    kept: the batches come from the one policy Study.quantize used (Study.fit_batches)."""
    row = {}
    if recipe.rounding_steps:
        fit, check = study.fit_batches(recipe, recipe.rounding_check)
        row |= {"rounding_steps": recipe.rounding_steps,
                "rounding_tokens": sum(b.n_tokens for b in fit)}  # fmt: skip
        if recipe.rounding_check:
            row |= {
                "rounding_check_tokens": sum(int(b.loss_mask.sum()) for b in check),
                "rounding_blocks_tuned": sum(
                    a < b for b, a in v.result.logs["rounding"].block_losses
                ),
            }
    if recipe.distill_epochs:
        fit, check = study.fit_batches(recipe, True)
        row |= {
            "distill_epochs": recipe.distill_epochs,
            "distill_tokens": sum(b.n_tokens for b in fit),
            "distill_check_tokens": sum(int(b.loss_mask.sum()) for b in check),
            "distill_checks": v.result.logs["distill"].checks,
            "distill_epoch_kept": v.result.logs["distill"].kept,
        }
    return row


CONTROL_EXAMPLES = 64  # first held-out examples of the control task scored per row


def control_nll(model, tokenizer, control) -> float:
    """Mean answer NLL on the control task's first CONTROL_EXAMPLES held-out examples:
    what a task-calibrated method costs off its task."""
    from tacq.eval.evaluate import EvalConfig, answer_logprobs

    ex = list(control.heldout[:CONTROL_EXAMPLES])
    nlls, _ = answer_logprobs(model, tokenizer, ex, control.style, EvalConfig())
    return sum(nlls) / len(nlls)


def paired_rows(a: dict, b: dict):
    """tacq.eval.stats.Paired of two stored rows (method a minus method b), per example."""
    from tacq.eval.stats import paired_values

    return paired_values(
        a["method"], b["method"], a["nll_each"], a["correct_each"], b["nll_each"], b["correct_each"]
    )


def run_task(
    task_name: str,
    bits_list: list[int],
    methods: list[str],
    examples: int,
    max_length: int,
    ppl_chunks: int,
    seed: int = 0,
    cross_tasks: tuple[str, ...] = (),
    cross_rows: list[dict] | None = None,
) -> list[dict]:
    from tacq.circuit.causal import default_control
    from tacq.data.reading import load_task
    from tacq.data.tasks import DataConfig, generic_text
    from tacq.eval.evaluate import evaluate, perplexity
    from tacq.formats.export import save_packed
    from tacq.formats.packed import dense_copy
    from tacq.models import load_model
    from tacq.study.workflow import Study

    lm = load_model()
    task = load_task(task_name)
    study = Study(lm, task, DataConfig(max_length=max_length, max_examples=examples, seed=seed))
    study.collect()
    held, text = list(task.heldout), generic_text()
    fp, lp = evaluate(lm.model, lm.tokenizer, held, task.style, "fp")
    # the dev split (never calibration, never held-out): where a matched-bits point is picked
    dev = list(task.split("dev"))
    fp_dev, dev_lp = evaluate(lm.model, lm.tokenizer, dev, task.style, "fp")
    fp_ppl = perplexity(lm.model, lm.tokenizer, text, max_chunks=ppl_chunks)
    control = load_task(default_control(task))
    fp_control = control_nll(lm.model, lm.tokenizer, control)
    others = {}  # cross-task: held-out of other tasks, with the fp model's results there
    for name in cross_tasks if seed == 0 else ():
        other = load_task(name)
        ofp, olp = evaluate(lm.model, lm.tokenizer, list(other.heldout), other.style, "fp")
        others[name] = (other, olp)
        cross_rows.append(
            {
                "calib_task": task_name,
                "eval_task": name,
                "method": "fp",
                "bits": 16,
                "answer_nll": ofp.answer_nll,
                "exact_match": ofp.exact_match,
            }
        )
    rows = []
    for bits in bits_list:
        base = {
            "task": task_name,
            "bits": bits,
            "seed": seed,
            "calib_examples": len(study.calib_examples),
            "heldout_examples": len(held),
        }
        if "fp" in methods:
            rows.append(
                {
                    **base,
                    "method": "fp",
                    "bpw": 16.0,
                    "answer_nll": fp.answer_nll,
                    "exact_match": fp.exact_match,
                    "kl_to_fp": 0.0,
                    "ppl": fp_ppl,
                    "control_task": control.name,
                    "control_nll": fp_control,
                    "seconds": 0.0,
                    "dev": dev_scores(fp_dev),
                    **per_example(fp),
                }
            )
        for m in [m for m in methods if m != "fp"]:
            t = time.perf_counter()
            recipe = Recipe.from_key(m, bits)  # its passes fit by the library's one policy
            v = study.quantize(recipe)
            secs = time.perf_counter() - t
            # Scored as plain Linears holding the dequantized weights: the same logits as the
            # packed variant (tests/test_packed.py), without dequantizing at every forward.
            model = dense_copy(v.model)
            r, _ = evaluate(model, lm.tokenizer, held, task.style, v.name, fp_logprobs=lp)
            d, _ = evaluate(model, lm.tokenizer, dev, task.style, v.name, fp_logprobs=dev_lp)
            row = {
                **base,
                "method": m,
                "bpw": v.size.bpw_paper,
                "bpw_honest": v.size.bpw_honest,
                "group_size": recipe.group_size,
                "ratio": recipe.ratio,
                "damp": recipe.damp,
                **fit_tokens(study, recipe, v),
                "answer_nll": r.answer_nll,
                "exact_match": r.exact_match,
                "kl_to_fp": r.kl_to_fp,
                "ppl": perplexity(model, lm.tokenizer, text, max_chunks=ppl_chunks),
                "control_task": control.name,
                "control_nll": control_nll(model, lm.tokenizer, control),
                "seconds": secs,
                "dev": dev_scores(d),
                **per_example(r),
            }
            for name, (other, olp) in others.items() if m in ("gptq", "tacq") else ():
                o, _ = evaluate(
                    model, lm.tokenizer, list(other.heldout), other.style, v.name, fp_logprobs=olp
                )
                cross_rows.append(
                    {
                        "calib_task": task_name,
                        "eval_task": name,
                        "method": m,
                        "bits": bits,
                        "answer_nll": o.answer_nll,
                        "exact_match": o.exact_match,
                        "kl_to_fp": o.kl_to_fp,
                    }
                )
            if m == "tacq":
                with tempfile.TemporaryDirectory() as d:
                    folder = save_packed(Path(d) / "x", lm, v)
                    row["packed_bytes"] = (folder / "model.safetensors").stat().st_size
                    row["size_report_bytes"] = v.size.total_bytes
                    row["fp16_bytes"] = v.size.fp16_bytes
            rows.append(row)
            print(
                f"{task_name} s{seed} {bits}-bit {m:<11} NLL {r.answer_nll:7.3f}  EM "
                f"{r.exact_match:5.3f}  KL {r.kl_to_fp:6.3f}  ppl {row['ppl']:8.1f}  "
                f"({secs:.0f} s)",
                flush=True,
            )
            del v, model
    return fill_gap_closed(rows)


def fill_gap_closed(rows: list[dict]) -> list[dict]:
    """Set each row's share of the GPTQ-to-fp answer-NLL gap from the fp and per-channel
    GPTQ rows of its own task, bits and seed, and drop it where those are missing. Done on
    the merged rows: a method rerun alone has no GPTQ row of its own run beside it."""
    ref = {
        (r["task"], r["bits"], r.get("seed", 0), r["method"]): r["answer_nll"]
        for r in rows
        if r["method"] in ("fp", "gptq")
    }
    for r in rows:
        key = (r["task"], r["bits"], r.get("seed", 0))
        fp, gptq = ref.get((*key, "fp")), ref.get((*key, "gptq"))
        r.pop("gap_closed", None)
        if r["method"] != "fp" and fp is not None and gptq is not None and gptq != fp:
            r["gap_closed"] = (gptq - r["answer_nll"]) / (gptq - fp)
    return rows


def _interval(r: dict, key: str) -> str:
    """The 95 % bootstrap interval of a row's mean from its per-example values, if kept."""
    from tacq.eval.stats import bootstrap

    return bootstrap(r[key]).text() if key in r else ""


def markdown(rows: list[dict]) -> str:
    out = [
        "| task | bits | method | BPW | BPW honest | held-out | answer NLL | 95 % interval | "
        "exact match | 95 % interval | KL to fp | ppl | control task NLL | gap closed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in [r for r in rows if r.get("seed", 0) == 0]:
        gap = f"{r['gap_closed']:.0%}" if "gap_closed" in r and r["method"] != "fp" else ""
        honest = f"{r['bpw_honest']:.3f}" if "bpw_honest" in r else ""
        control = f"{r['control_task']} {r['control_nll']:.3f}" if "control_nll" in r else ""
        out.append(
            f"| {r['task']} | {r['bits']} | {r['method']} | {r['bpw']:.3f} | {honest} | "
            f"{r.get('heldout_examples', '')} | {r['answer_nll']:.3f} | "
            f"{_interval(r, 'nll_each')} | {r['exact_match']:.3f} | "
            f"{_interval(r, 'correct_each')} | {r['kl_to_fp']:.3f} | {r['ppl']:.1f} | {control} | {gap} |"
        )
    return "\n".join(out) + "\n\n" + seeds_markdown(rows)


def paired_markdown(rows: list[dict]) -> str:
    """TaCQ (per channel and group-wise) against every other method of the same task and
    bits, example by example: what the held-out set decides and what it does not."""
    out = [
        "| task | bits | A | B | NLL A - B | 95 % interval | A better on | EM A - B | "
        "95 % interval | decided |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    seed0 = [r for r in rows if r.get("seed", 0) == 0 and "nll_each" in r]
    for task, bits in sorted({(r["task"], r["bits"]) for r in seed0}):
        here = {r["method"]: r for r in seed0 if (r["task"], r["bits"]) == (task, bits)}
        for a in [m for m in here if parse_method(m)[0] == "tacq"]:
            for b in [m for m in here if m not in ("fp", a)]:
                p = paired_rows(here[a], here[b])
                decided = f"{p.better} better" if p.better else "no"
                out.append(
                    f"| {task} | {bits} | {a} | {b} | {p.nll.mean:+.3f} | {p.nll.text()} | "
                    f"{p.a_better:.0%} | {p.em.mean:+.3f} | {p.em.text()} | {decided} |"
                )
    return "\n".join(out) if len(out) > 2 else ""


def seeds_markdown(rows: list[dict]) -> str:
    """Mean and spread over calibration seeds for the (task, bits, method) run with several."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["bits"], r["method"]), []).append(r)
    out = [
        "| task | bits | method | seeds | answer NLL mean ± sd | exact match mean ± sd | "
        "gap closed mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, bits, m), rs in groups.items():
        if len(rs) < 2:
            continue
        nll = [r["answer_nll"] for r in rs]
        em = [r["exact_match"] for r in rs]
        gaps = [r["gap_closed"] for r in rs if "gap_closed" in r]
        gap = f"{statistics.mean(gaps):.0%}" if len(gaps) == len(rs) else ""  # every seed's
        out.append(
            f"| {task} | {bits} | {m} | {len(rs)} | {statistics.mean(nll):.3f} ± "
            f"{statistics.stdev(nll):.3f} | {statistics.mean(em):.3f} ± "
            f"{statistics.stdev(em):.3f} | {gap} |"
        )
    return "\n".join(out) if len(out) > 2 else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="antonyms")
    ap.add_argument("--bits", default="2,3")
    ap.add_argument("--methods", default=",".join(ALL))
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--ppl-chunks", type=int, default=8)
    ap.add_argument(
        "--seeds",
        default="0",
        help="calibration samples; seeds > 0 run --seed-methods at --seed-bits only",
    )
    ap.add_argument("--seed-methods", default="gptq,msg,tacq")
    ap.add_argument("--seed-bits", default="2")
    ap.add_argument(
        "--cross",
        action="store_true",
        help="also evaluate each task's 2-bit GPTQ/TaCQ on the other tasks",
    )
    args = ap.parse_args()
    unknown = [m for m in f"{args.methods},{args.seed_methods}".split(",") if not known_method(m)]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    path = ROOT / "bench" / "results" / "quality.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    tasks = args.tasks.split(",")
    rows, cross = [], []
    for task in tasks:
        for seed in [int(x) for x in args.seeds.split(",")]:
            bits, methods = args.bits, args.methods
            if seed:
                bits, methods = args.seed_bits, args.seed_methods
            rows += run_task(
                task,
                [int(b) for b in bits.split(",")],
                methods.split(","),
                args.examples,
                args.max_length,
                args.ppl_chunks,
                seed,
                tuple(t for t in tasks if t != task) if args.cross else (),
                cross,
            )
    stamp(rows)
    stamp(cross)
    key = lambda r: (r["task"], r["bits"], r["method"], r.get("seed", 0))  # noqa: E731
    done = {key(r) for r in rows}
    # a row measured on another held-out set of a rerun task cannot sit beside the new ones
    held = {(r["task"], r["bits"]): r["heldout_examples"] for r in rows}
    kept = [
        r
        for r in saved.get("rows", [])
        if key(r) not in done
        and held.get((r["task"], r["bits"]), r.get("heldout_examples")) == r.get("heldout_examples")
    ]
    merged = fill_gap_closed(kept + rows)
    merged.sort(key=lambda r: (r["task"], r["bits"], method_order(r["method"]), r.get("seed", 0)))
    cross = cross or saved.get("cross_task", [])
    print(markdown(merged))
    print(cross_markdown(cross))
    write_result("quality", {"rows": merged, "cross_task": cross, "ratio": 0.0035})


def cross_markdown(cross: list[dict]) -> str:
    """Held-out NLL of the 2-bit TaCQ model calibrated on one task, evaluated on each task."""
    if not cross:
        return ""
    calib = sorted({r["calib_task"] for r in cross})
    evals = sorted({r["eval_task"] for r in cross} | set(calib))
    out = [
        "| TaCQ 2-bit NLL (GPTQ 2-bit) | " + " | ".join(f"eval {e}" for e in evals) + " |",
        "|---|" + "---|" * len(evals),
    ]
    for c in calib:
        cells = []
        for e in evals:
            nll = {
                r["method"]: r["answer_nll"]
                for r in cross
                if r["calib_task"] == c and r["eval_task"] == e
            }
            t, g = nll.get("tacq"), nll.get("gptq")
            cells.append(
                "(own task: see above)"
                if c == e
                else f"{t:.3f} ({g:.3f})"
                if t is not None and g is not None
                else ""
            )
        out.append(f"| calib {c} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
