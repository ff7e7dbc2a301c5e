"""Accuracy cost of low-memory gradient accumulators, on the real SmolLM2.

Large models may not have room for fp32 |g| sums on the device. The options are sums kept
in host memory (exact, slower) or in bf16 (half the memory). This measures how much the
selected circuit changes: top-k overlap (share of the kept weights that are the same) of
MSG and TaCQ at p = 0.35 %, bf16 sums vs fp32 sums, plus the max relative error of G.

    python bench/accumulators.py [--examples 32]
Writes bench/results/accumulators.json.
"""

from __future__ import annotations

import argparse
import time

from _common import write_result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="antonyms")
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--ratio", type=float, default=0.0035)
    args = ap.parse_args()

    from tacq.circuit.gradients import GradientConfig, collect_abs_grads
    from tacq.circuit.saliency import model_scores
    from tacq.circuit.select import rank
    from tacq.data.reading import load_task
    from tacq.data.tasks import DataConfig
    from tacq.models import load_model, quantizable_linears
    from tacq.study.workflow import Study

    lm = load_model()
    study = Study(lm, load_task(args.task), DataConfig(max_examples=args.examples))
    batches = study.batches()
    runs, secs = {}, {}
    for label, cfg in {
        "fp32": GradientConfig(accum_dtype="float32", accum_device="model"),
        "fp32 on host": GradientConfig(accum_dtype="float32", accum_device="cpu"),
        "bf16": GradientConfig(accum_dtype="bfloat16", accum_device="model"),
    }.items():
        t = time.perf_counter()
        runs[label] = collect_abs_grads(lm.model, batches, cfg)
        secs[label] = time.perf_counter() - t
    ref = study.references.get(2)
    weights = {n: m.weight for n, m in quantizable_linears(lm.model).items()}
    out = {"ratio": args.ratio, "seconds": secs, "metrics": {}}
    for metric in ("msg", "tacq"):
        kept = {}
        for label, stats in runs.items():
            r = rank(model_scores(metric, weights, stats, ref), args.ratio)
            k = r.k_at(args.ratio)
            kept[label] = set(r.order[:k].tolist())
        base = kept["fp32"]
        overlap = {label: len(base & s) / len(base) for label, s in kept.items()}
        out["metrics"][metric] = {"k": len(base), "top_k_overlap_vs_fp32": overlap}
        print(
            f"{metric}: k={len(base):,}  overlap vs fp32: "
            + ", ".join(f"{lab} {v:.4f}" for lab, v in overlap.items())
        )
    rel = max(
        float((runs["bf16"].abs_grad[n] - G).abs().max() / G.abs().max())
        for n, G in runs["fp32"].abs_grad.items()
    )
    out["bf16_max_rel_error_of_G"] = rel
    print(
        f"bf16 sums: max relative error of G {rel:.2e}; times "
        + ", ".join(f"{k} {v:.1f} s" for k, v in secs.items())
    )
    write_result("accumulators", out)


if __name__ == "__main__":
    main()
