"""Levers for where TaCQ misses a target, chosen on the dev split only.

For one task and bit width, TaCQ (p = 0.35 % unless the lever changes it) under each lever:
a larger kept ratio, the loss on answer tokens only, all calibration examples, a group size,
GPTQ's act-order, Hessians from the original model's activations instead of true-sequential
ones, the generic text (the part perplexity does not read) added to GPTQ's Hessians, more
damping of GPTQ's Hessians (32 calibration examples hold ~650 tokens, fewer than the 1,536
inputs of an MLP down projection, so its Hessian is rank-deficient), a rotated basis,
tuned rounding, every scale distilled from the fp model (tacq.quant.distill), and
TaCQ's kept weights put back on a peer's rounding (HQQ or AutoRound run by their own
packages; those levers need bench/requirements-peers.txt and are recorded with the reason
when it is missing). Each is scored on the task's **dev** split (never used for
calibration, never the held-out set); the lever with the lowest dev answer NLL is then
scored once on the held-out split, so the held-out number is not picked by looking at it.
Writes bench/results/levers.json (merged by task, bit width and lever: levers not named
in --levers keep their earlier rows, and the dev pick is made over all).

    python bench/levers.py --task antonyms --bits 3
    python bench/levers.py --task antonyms --bits 3 --levers "generic text in the Hessians" \
        --heldout-all    # also on held-out, as a fixed setting
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass

from _common import ROOT, stamp, write_result
from quality import per_example

from tacq.data.calibration import generic_fit_batches, generic_fit_texts


@dataclass(frozen=True)
class Lever:
    ratio: float = 0.0035
    answer_only: bool = False
    examples: int = 32
    group_size: int | None = None
    act_order: bool = False
    sequential: bool = True
    peer: str | None = None  # keep TaCQ's weights on this peer's rounding instead of GPTQ's
    # GPTQ's Hessians (or the peer's calibration) also from the generic text; saliency stays
    # task-only
    generic: bool = False
    damp: float = 0.01  # GPTQ's damping of diag(H); more trusts the few task tokens less
    rotation: str | None = (
        None  # the unkept weights quantized in a rotated basis (tacq.quant.rotation)
    )
    # then tuned rounding (tacq.quant.rounding), this many steps per block, checked on held-aside
    # calibration examples, as Study.quantize's "tuned + checked"; 0: GPTQ's rounding
    rounding_steps: int = 0
    # then every scale distilled from the fp model at once (tacq.quant.distill), this many
    # epochs, as Study.quantize's distill: its batches, the epoch kept by the held-aside check
    distill_epochs: int = 0


PEER_ITERS = 50  # AutoRound's tuning steps, as in the peers table (bench/one_task.py)


LEVERS = {
    "default": Lever(),
    "kept 0.50 %": Lever(ratio=0.005),
    "kept 0.60 %": Lever(ratio=0.006),
    "kept 1 %": Lever(ratio=0.01),
    "kept 2 %": Lever(ratio=0.02),
    "answer-only loss": Lever(answer_only=True),
    "all calibration examples": Lever(examples=64),
    "group size 128": Lever(group_size=128),
    "act-order": Lever(act_order=True),
    "Hessians from the original activations": Lever(sequential=False),
    "generic text in the Hessians": Lever(generic=True),
    "GPTQ damping 10 %": Lever(damp=0.1),
    "GPTQ damping 100 %": Lever(damp=1.0),
    "GPTQ damping 10 % + act-order": Lever(damp=0.1, act_order=True),
    "kept 1 % + damping 10 %": Lever(ratio=0.01, damp=0.1),
    "group size 128 + damping 10 %": Lever(group_size=128, damp=0.1),
    "group size 128 + damping 10 % + act-order": Lever(group_size=128, damp=0.1, act_order=True),
    "group size 128 + damping 10 % + generic text in the Hessians": Lever(
        group_size=128, damp=0.1, generic=True
    ),
    # smaller groups spend more bits on scales (3-bit codes: 3.43 BPW at g64, 3.73 at g32, at 0.35 % kept)
    "group size 64 + damping 10 %": Lever(group_size=64, damp=0.1),
    "group size 32 + damping 10 %": Lever(group_size=32, damp=0.1),
    # at 0.20 % kept TaCQ fits under AutoRound g128's honest BPW at 2 bits (2.114 vs 2.152)
    "kept 0.20 % + damping 10 %": Lever(ratio=0.002, damp=0.1),
    "kept 0.20 % + damping 30 %": Lever(ratio=0.002, damp=0.3),
    "kept 0.20 % + damping 10 % + act-order": Lever(ratio=0.002, damp=0.1, act_order=True),
    "kept 0.20 % + damping 10 % + generic text in the Hessians": Lever(
        ratio=0.002, damp=0.1, generic=True
    ),
    # the unkept weights in a rotated (Hadamard) basis, the kept ones exact (as `_roth` rows)
    "rotated + damping 10 %": Lever(damp=0.1, rotation="hadamard"),
    "rotated + kept 0.20 % + damping 10 %": Lever(ratio=0.002, damp=0.1, rotation="hadamard"),
    "rotated + group size 64 + damping 10 %": Lever(group_size=64, damp=0.1, rotation="hadamard"),
    "rotated + group size 32 + damping 10 %": Lever(group_size=32, damp=0.1, rotation="hadamard"),
    # the dense Haar rotation: per channel it beat the Hadamard one on antonyms' held-out NLL
    "dense-rotated + group size 64 + damping 10 %": Lever(group_size=64, damp=0.1, rotation="haar"),
    "dense-rotated + group size 32 + damping 10 %": Lever(group_size=32, damp=0.1, rotation="haar"),
    "rotated + group size 64 + damping 10 % + checked rounding": Lever(
        group_size=64, damp=0.1, rotation="hadamard", rounding_steps=100
    ),
    "rotated + group size 32 + damping 10 % + checked rounding": Lever(
        group_size=32, damp=0.1, rotation="hadamard", rounding_steps=100
    ),
    # the scales then distilled from the fp model (task and generic text, KL of next tokens)
    "rotated + damping 10 % + distilled scales": Lever(
        damp=0.1, rotation="hadamard", distill_epochs=2
    ),
    "rotated + group size 64 + damping 10 % + distilled scales": Lever(
        group_size=64, damp=0.1, rotation="hadamard", distill_epochs=2
    ),
    "rotated + group size 32 + damping 10 % + distilled scales": Lever(
        group_size=32, damp=0.1, rotation="hadamard", distill_epochs=2
    ),
    "kept weights on HQQ g64's rounding": Lever(group_size=64, peer="hqq"),
    "kept weights on AutoRound g128's rounding": Lever(group_size=128, peer="autoround"),
    "kept weights on AutoRound g128's rounding with generic text": Lever(
        group_size=128, peer="autoround", generic=True
    ),
}


def dequantized(model, layers):
    """A copy of the model holding each quantized Linear's dequantized weight."""
    out = copy.deepcopy(model)
    for name, lq in layers.items():
        out.get_submodule(name).weight.data = lq.dequantize()
    return out


def recipe_of(bits: int, lever: Lever):
    """The tacq.quant.recipe.Recipe a lever quantizes with (its data and Hessian levers aside)."""
    from tacq.quant.recipe import Recipe

    return Recipe(
        bits=bits, ratio=lever.ratio, group_size=lever.group_size, damp=lever.damp,
        act_order=lever.act_order, rounding_steps=lever.rounding_steps,
        rounding_check=bool(lever.rounding_steps), rotation=lever.rotation,
        distill_epochs=lever.distill_epochs,
    )  # fmt: skip


def run_lever(lm, task, bits: int, lever: Lever):
    """Quantize with one lever -> (its honest BPW and time, the dequantized model, and for a
    peer lever the peer's own model from the same run, else None). A lever a Recipe can
    say runs through Study.quantize, as the app and the CLI do; the generic text in the
    Hessians and Hessians from the original activations run GPTQ's block walk directly."""
    from tacq.circuit.gradients import GradientConfig
    from tacq.data.tasks import DataConfig
    from tacq.formats.packed import dense_copy
    from tacq.quant.quantize import quantize_model
    from tacq.study.workflow import Study

    t = time.perf_counter()
    data = DataConfig(max_examples=lever.examples)
    study = Study(lm, task, data, GradientConfig(answer_only=lever.answer_only))
    study.collect()
    recipe = recipe_of(bits, lever)
    sel = recipe.selection
    ranking = study.ranking(sel)
    if lever.peer:
        return on_peer_rounding(lm, study, ranking, bits, lever, t)
    extra = generic_fit_batches(lm.tokenizer) if lever.generic else []
    fit_passes = lever.rotation or lever.rounding_steps or lever.distill_epochs
    if fit_passes and (extra or not lever.sequential):  # Study.quantize's walk only
        raise ValueError(
            "a rotated lever (or one with tuned rounding or distilled scales) combines with "
            "ratio, damping, groups, act-order and rotation only"
        )
    if extra or not lever.sequential:
        cfg = recipe.gptq_config
        res = quantize_model(
            lm.model,
            study.batches(answer_only=False) + extra,
            cfg,
            ranking.masks(lever.ratio),
            unmasked=study.references.unmasked_grid(cfg),
            sequential=lever.sequential,
        )
        model, result = dequantized(lm.model, res.layers), res
    else:
        v = study.quantize(recipe)
        model, result = dense_copy(v.model), v.result
    row = {
        "bpw_honest": study.size_at(sel, ranking).bpw_honest,
        "seconds": time.perf_counter() - t,
        "hessian_tokens": sum(b.n_tokens for b in study.batches(answer_only=False) + extra),
    }
    if lever.distill_epochs:  # the held-aside check loss per epoch and the epoch kept
        row |= {
            "distill_checks": result.logs["distill"].checks,
            "distill_epoch_kept": result.logs["distill"].kept,
        }
    return row, model, None


def on_peer_rounding(lm, study, ranking, bits: int, lever: Lever, start: float):
    """The peer's dequantized weights with TaCQ's kept weights put back at full precision
    (no error compensation: the peer's rounding of the rest is left as it chose it), and
    the peer's own weights from the same run: AutoRound's tuning is not repeatable from run
    to run, so only this pair tells what putting the weights back did."""
    import torch

    from tacq.peers.registry import PEERS, dequantized_model, honest_bpw, package_version

    run = PEERS[lever.peer][2](
        copy.deepcopy(lm.model),
        ranking.names,
        bits,
        lever.group_size,
        tokenizer=lm.tokenizer,
        texts=[e.prompt + e.answer for e in study.calib_examples]
        + (generic_fit_texts(lm.tokenizer) if lever.generic else []),
        iters=PEER_ITERS,
        seed=0,
    )
    masks = ranking.masks(lever.ratio)
    original = {n: lm.model.get_submodule(n).weight.detach().float() for n in run.weights}
    weights = {n: torch.where(masks[n], original[n], w) for n, w in run.weights.items()}
    kept = {n: int(m.sum()) for n, m in masks.items()}
    row = {
        "bpw_honest": honest_bpw(lm.model, ranking.names, bits, lever.group_size, run.fmt, kept),
        "seconds": time.perf_counter() - start,
        "peer": package_version(lever.peer),
        "peer_settings": run.settings,
        "peer_bpw_honest": honest_bpw(lm.model, ranking.names, bits, lever.group_size, run.fmt),
    }
    return row, dequantized_model(lm.model, weights), dequantized_model(lm.model, run.weights)


def score(lm, task, model, examples: list, fp_lp, keep_each: bool = False) -> dict:
    from tacq.eval.evaluate import evaluate

    r, _ = evaluate(model, lm.tokenizer, examples, task.style, "lever", fp_logprobs=fp_lp)
    return {
        "examples": len(examples),
        "answer_nll": r.answer_nll,
        "exact_match": r.exact_match,
        **(per_example(r) if keep_each else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="antonyms")
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--levers", default=",".join(LEVERS), help="comma list of lever names")
    ap.add_argument(
        "--heldout-all",
        action="store_true",
        help="also score every lever run now on held-out, as a fixed setting (for a "
        "same-calibration comparison with a peer; never used to pick)",
    )
    args = ap.parse_args()
    names = args.levers.split(",")
    if unknown := [n for n in names if n not in LEVERS]:
        ap.error(f"unknown lever(s) {unknown}; choose from {', '.join(LEVERS)}")

    from tacq.data.reading import load_task
    from tacq.eval.evaluate import evaluate
    from tacq.models import load_model
    from tacq.peers.registry import INSTALL, package_version

    lm = load_model()
    task = load_task(args.task)
    dev, held = list(task.split("dev")), list(task.heldout)
    fp_held, held_lp = evaluate(lm.model, lm.tokenizer, held, task.style, "fp")
    path = ROOT / "bench" / "results" / "levers.json"
    saved = json.loads(path.read_text())["runs"] if path.exists() else []
    before = next((r for r in saved if (r["task"], r["bits"]) == (args.task, args.bits)), None)
    fp_dev, dev_lp = evaluate(lm.model, lm.tokenizer, dev, task.style, "fp")
    rows, best, best_model = [], None, None
    for name in names:
        if (peer := LEVERS[name].peer) and package_version(peer) is None:
            rows.append({"lever": name, "error": f"{peer} is not installed ({INSTALL})"})
            print(f"{name}: skipped, {rows[-1]['error']}", flush=True)
            continue
        row, model, peer_alone = run_lever(lm, task, args.bits, LEVERS[name])
        row = {"lever": name, **row, "dev": score(lm, task, model, dev, dev_lp)}
        if args.heldout_all:
            row["heldout"] = score(lm, task, model, held, held_lp, keep_each=True)
        if peer_alone is not None:  # the same run without the kept weights put back
            row["peer_alone"] = {"dev": score(lm, task, peer_alone, dev, dev_lp)}
            if args.heldout_all:
                row["peer_alone"]["heldout"] = score(lm, task, peer_alone, held, held_lp)
            del peer_alone
        rows.append(stamp([row])[0])
        print(
            f"{args.task} {args.bits}-bit {name:<40} dev NLL {row['dev']['answer_nll']:.3f} "
            f"EM {row['dev']['exact_match']:.3f}  BPW {row['bpw_honest']:.3f}",
            flush=True,
        )
        if best is None or row["dev"]["answer_nll"] < best["dev"]["answer_nll"]:
            best, best_model = row, model  # only the best model so far stays in memory
        del model
    # levers not rerun now keep their earlier rows; the dev pick is made over all of them
    kept = [r for r in (before or {}).get("levers", []) if r["lever"] not in names]
    order = list(LEVERS)
    rows = sorted(kept + rows, key=lambda r: order.index(r["lever"]) if r["lever"] in order else 99)
    scored = [r for r in rows if "dev" in r]
    if not scored:
        sys.exit("No lever ran; nothing to write.")
    pick = min(scored, key=lambda r: r["dev"]["answer_nll"])
    if pick is not best and "heldout" not in pick:  # an earlier row never scored on held-out
        _, best_model, _ = run_lever(lm, task, args.bits, LEVERS[pick["lever"]])
    if "heldout" not in pick or pick is best:
        pick["heldout"] = score(lm, task, best_model, held, held_lp, keep_each=True)
    print(f"best on dev: {pick['lever']}; held-out NLL {pick['heldout']['answer_nll']:.3f}")
    result = {
        "task": args.task,
        "bits": args.bits,
        "fp": {
            "dev": {"answer_nll": fp_dev.answer_nll, "exact_match": fp_dev.exact_match},
            "heldout": {"answer_nll": fp_held.answer_nll, "exact_match": fp_held.exact_match},
        },
        "levers": rows,
        "best_on_dev": pick["lever"],
    }
    stamp([result])
    runs = [r for r in saved if (r["task"], r["bits"]) != (args.task, args.bits)] + [result]
    write_result("levers", {"runs": sorted(runs, key=lambda r: (r["task"], r["bits"]))})


if __name__ == "__main__":
    main()
