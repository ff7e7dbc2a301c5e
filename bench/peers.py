"""What users would run instead: AutoRound and HQQ, each run by its own package.

Each peer quantizes the same SmolLM2 (fp32, CPU) at the bit widths and group sizes its
own docs use; its dequantized weights are copied into the same transformers model and
scored by our evaluator on the task's held-out split, exactly as bench/quality.py scores
ours. AutoRound gets the calibration examples TaCQ uses (the first --examples of the
task's calibration split, prompt + answer as one text each), as a list of strings: no
dataset download. Each row records the package version, the settings, the samples and
tokens the peer used, its wall time and its honest bits per weight (its scales and zeros
counted by tacq.formats.sizes.linear_bytes, the function that counts ours).

    pip install -r bench/requirements-peers.txt    # optional; the core install is unchanged
    python bench/peers.py --task antonyms --bits 2,3
    python bench/peers.py --task antonyms --peers hqq --bits 2 --iters 50
    python bench/peers.py --task antonyms --peers autoround --iters 0   # its RTN mode
    python bench/peers.py --task antonyms --peers autoround --generic-calibration

A peer whose package is missing or fails is recorded with its error instead of numbers;
nothing is substituted under its name. Writes bench/results/peers.json (merged by task,
peer, bits, group size and calibration seed).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import traceback

from _common import ROOT, stamp, write_result
from quality import control_nll, per_example

from tacq.data.calibration import generic_fit_texts
from tacq.peers.registry import PEER_POINTS, PEERS, dequantized_model, honest_bpw, package_version


def method_name(peer: str, group: int, iters: int, generic: bool = False) -> str:
    """'autoround_g128'; AutoRound with no tuning steps is its RTN mode: 'autoround-rtn_g128';
    calibrated on the generic text as well: 'autoround+generic_g128'."""
    name = f"{peer}-rtn" if peer == "autoround" and iters == 0 else peer
    return f"{name}{'+generic' if generic else ''}_g{group}"


def weight_error(model, weights: dict) -> dict:
    """How far the peer moved each Linear: ||W_peer - W|| / ||W||, median and worst. A model
    that breaks although no Linear is far off points at an interaction, not a bad layer."""
    mods = dict(model.named_modules())
    rel = {
        n: float((w.float() - mods[n].weight.float()).norm() / mods[n].weight.float().norm())
        for n, w in weights.items()
    }
    worst = max(rel, key=rel.get)
    return {"median": statistics.median(rel.values()), "max": rel[worst], "worst": worst}


def run_point(peer: str, bits: int, group: int, ctx: dict, args) -> dict:
    """One peer at one bit width and group size -> a result row (or its error)."""
    from tacq.eval.evaluate import evaluate, perplexity

    package, _, fn = PEERS[peer]
    base = {
        "task": args.task,
        "bits": bits,
        "method": method_name(peer, group, args.iters, args.generic_calibration),
        "peer": peer,
        "group_size": group,
        "seed": args.seed,
        "calib_examples": len(ctx["texts"]),
        "heldout_examples": len(ctx["held"]),
    }
    installed = package_version(peer)
    if installed is None:
        return {
            **base,
            "error": f"{package} is not installed (pip install -r bench/requirements-peers.txt)",
        }
    base["package"] = installed
    lm = ctx["lm"]
    t = time.perf_counter()
    try:
        run = fn(
            copy.deepcopy(lm.model),
            ctx["names"],
            bits,
            group,
            tokenizer=lm.tokenizer,
            texts=ctx["texts"],
            iters=args.iters,
            seed=args.seed,
        )
    except Exception as e:  # noqa: BLE001 - recorded, with the error, instead of numbers
        traceback.print_exc()
        return {**base, "error": f"{type(e).__name__}: {e}"[:500]}
    secs = time.perf_counter() - t
    model = dequantized_model(lm.model, run.weights)
    r, _ = evaluate(
        model, lm.tokenizer, ctx["held"], ctx["style"], base["method"], fp_logprobs=ctx["fp_lp"]
    )
    row = {
        **base,
        "settings": run.settings,
        "used": run.used,
        "bpw": float(bits),
        "bpw_honest": honest_bpw(lm.model, ctx["names"], bits, group, run.fmt),
        "weight_rel_err": weight_error(lm.model, run.weights),
        "answer_nll": r.answer_nll,
        "exact_match": r.exact_match,
        "kl_to_fp": r.kl_to_fp,
        "ppl": perplexity(model, lm.tokenizer, ctx["text"], max_chunks=args.ppl_chunks),
        "control_task": ctx["control"].name,
        "control_nll": control_nll(model, lm.tokenizer, ctx["control"]),
        "seconds": secs,
        **per_example(r),
    }
    print(
        f"{args.task} {bits}-bit {row['method']:<16} BPW {row['bpw_honest']:.3f}  NLL "
        f"{r.answer_nll:7.3f}  EM {r.exact_match:5.3f}  ({secs:.0f} s)",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="antonyms")
    ap.add_argument("--bits", default="2,3")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--examples", type=int, default=32, help="calibration examples (as TaCQ)")
    ap.add_argument(
        "--iters", type=int, default=200, help="AutoRound tuning steps per block (its default)"
    )
    ap.add_argument(
        "--generic-calibration",
        action="store_true",
        help="give AutoRound the generic text past what perplexity reads as well (rows "
        "named autoround+generic_g128...): what it does with more than the task's tokens",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="calibration seed: draws the calibration sample as bench/quality.py --seeds does "
        "and seeds the peer; rows with seed > 0 sit beside seed 0, which the tables compare",
    )
    ap.add_argument("--ppl-chunks", type=int, default=8)
    ap.add_argument(
        "--groups",
        type=lambda text: [int(g) for g in text.split(",")],
        default=None,
        help="only these of the peer's documented group sizes (default: all of them)",
    )
    args = ap.parse_args()
    peers = args.peers.split(",")
    if unknown := [p for p in peers if p not in PEERS]:
        ap.error(f"unknown peer(s) {unknown}; choose from {', '.join(PEERS)}")
    known = {g for p in peers for groups in PEER_POINTS[p].values() for g in groups}
    if args.groups and (odd := sorted(set(args.groups) - known)):
        ap.error(f"group size(s) {odd} are none of {', '.join(peers)}'s ({sorted(known)})")

    from tacq.circuit.causal import default_control
    from tacq.data.reading import load_task
    from tacq.data.tasks import DataConfig, generic_text
    from tacq.eval.evaluate import evaluate
    from tacq.models import load_model, quantizable_linears
    from tacq.study.workflow import Study

    lm = load_model()
    task = load_task(args.task)
    study = Study(lm, task, DataConfig(max_examples=args.examples, seed=args.seed))
    texts = [e.prompt + e.answer for e in study.calib_examples]
    if args.generic_calibration:
        texts += generic_fit_texts(lm.tokenizer, args.ppl_chunks * 256)
    held = list(task.heldout)
    _, fp_lp = evaluate(lm.model, lm.tokenizer, held, task.style, "fp")
    ctx = {
        "lm": lm,
        "names": list(quantizable_linears(lm.model)),
        "texts": texts,
        "held": held,
        "style": task.style,
        "fp_lp": fp_lp,
        "text": generic_text(),
        "control": load_task(default_control(task)),
    }
    rows = []
    for peer in peers:
        for bits in (int(b) for b in args.bits.split(",")):
            for group in PEER_POINTS[peer][bits]:
                if args.groups and group not in args.groups:
                    continue
                rows.append(run_point(peer, bits, group, ctx, args))
    stamp(rows)
    path = ROOT / "bench" / "results" / "peers.json"
    saved = json.loads(path.read_text())["rows"] if path.exists() else []
    key = lambda r: (r["task"], r["bits"], r["method"], r.get("seed", 0))  # noqa: E731
    done = {key(r) for r in rows}
    merged = [r for r in saved if key(r) not in done] + rows
    merged.sort(key=key)
    write_result("peers", {"rows": merged})


if __name__ == "__main__":
    main()
