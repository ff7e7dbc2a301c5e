"""Pipeline speed and memory on the real SmolLM2, ours vs the reference way, in one run.

  1. End-to-end default pipeline from empty caches: load, 32 calibration examples,
     gradients, unmasked 2-bit GPTQ (for dW), TaCQ scores + masked 2-bit GPTQ, held-out eval.
     Target < 5 minutes on this CPU. Peak RSS of the process (target < 4 GB).
  2. GPTQ: seconds per decoder block and per Linear (Hessians of a block's sequential group
     are collected in one pass over the calibration inputs).
  3. Gradients: batched per-sample |grad| (hooks + einsum) vs the reference batch-size-1
     autograd loop on the same examples: speed-up (target >= 3x) and max relative difference
     (target <= 1e-4).

    python bench/speed.py [--examples 32] [--loop-examples 32] [--repeats 3]
Writes bench/results/speed.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

from _common import median, write_result


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, *args) -> float:
    """Seconds one call of fn(*args) takes (CPU: nothing to synchronize)."""
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="antonyms")
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--loop-examples", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="timed gradient runs (median)")
    ap.add_argument("--bits", type=int, default=2)
    args = ap.parse_args()

    from tacq.models import models_dir

    os.environ.setdefault("TACQ_MODELS_DIR", str(models_dir()))  # keep the converted model
    os.environ["TACQ_HOME"] = tempfile.mkdtemp(prefix="tacq-speed-")  # empty caches

    import torch

    from tacq.data import DataConfig, load_task
    from tacq.evaluate import evaluate
    from tacq.gradients import GradientConfig, abs_grads_loop, collect_abs_grads
    from tacq.models import load_model
    from tacq.workflow import Study

    stages: dict[str, float] = {}
    t_all = time.perf_counter()
    t = time.perf_counter()
    lm = load_model()
    task = load_task(args.task)
    # as `python -m tacq run` does: TaCQ needs only the |g| sums
    study = Study(
        lm, task, DataConfig(max_examples=args.examples), GradientConfig(extra_stats=False)
    )
    stages["load model + data"] = time.perf_counter() - t
    t = time.perf_counter()
    stats = study.collect()
    stages["gradients"] = time.perf_counter() - t
    t = time.perf_counter()
    ref = study.reference(args.bits)
    stages[f"GPTQ {args.bits}-bit reference (dW)"] = time.perf_counter() - t
    t = time.perf_counter()
    v = study.quantize(args.bits, 0.0035, "tacq")
    stages[f"TaCQ scores + masked GPTQ {args.bits}-bit"] = time.perf_counter() - t
    t = time.perf_counter()
    held = list(task.heldout)
    fp, lp = evaluate(lm.model, lm.tokenizer, held, task.style, "fp")
    res, _ = evaluate(v.model, lm.tokenizer, held, task.style, v.name, fp_logprobs=lp)
    stages["held-out eval (fp + variant)"] = time.perf_counter() - t
    total = time.perf_counter() - t_all
    rss = peak_rss_mb()
    print("end-to-end stages:")
    for k, s in stages.items():
        print(f"  {k:<40} {s:7.1f} s")
    print(f"  {'total':<40} {total:7.1f} s   target < 300 s")
    print(f"  peak RSS {rss:,.0f} MB   target < 4096 MB")
    print(f"  held-out NLL fp {fp.answer_nll:.3f}  {v.name} {res.answer_nll:.3f}")

    # GPTQ per block: layer_seconds holds the column-loop time of each Linear.
    blocks: dict[int, float] = {}
    for name, s in v.result.layer_seconds.items():
        idx = int(name.split(".layers.")[1].split(".")[0])
        blocks[idx] = blocks.get(idx, 0.0) + s
    per_block = ref.seconds / max(len(blocks), 1)
    print(
        f"GPTQ: whole model {ref.seconds:.1f} s, {per_block:.2f} s per block "
        f"({len(blocks)} blocks); column loops alone {sum(blocks.values()):.1f} s"
    )

    # Gradients: batched vs the batch-size-1 autograd loop on the same examples.
    loop_study = Study(lm, task, DataConfig(max_examples=args.loop_examples))
    batches = loop_study.batches()
    # One warm-up call each, then the median of --repeats timed calls.
    grad_cfg = GradientConfig(extra_stats=False)
    batched = collect_abs_grads(lm.model, batches, grad_cfg)
    looped = abs_grads_loop(lm.model, batches)
    t_batched = median(
        [_timed(collect_abs_grads, lm.model, batches, grad_cfg) for _ in range(args.repeats)]
    )
    t_loop = median([_timed(abs_grads_loop, lm.model, batches) for _ in range(args.repeats)])
    rel = max(
        float((batched.abs_grad[n] - looped[n]).abs().max() / looped[n].abs().max()) for n in looped
    )
    print(
        f"gradients on {args.loop_examples} examples: batched {t_batched:.1f} s, "
        f"loop {t_loop:.1f} s -> x{t_loop / t_batched:.2f} (target >= 3); "
        f"max relative difference {rel:.2e} (target <= 1e-4)"
    )

    write_result(
        "speed",
        {
            "task": args.task,
            "bits": args.bits,
            "calib_examples": len(study.calib_examples),
            "calib_tokens": stats.n_tokens,
            "stages_s": stages,
            "end_to_end_s": total,
            "target_end_to_end_s": 300,
            "peak_rss_mb": rss,
            "target_peak_rss_mb": 4096,
            "heldout_nll_fp": fp.answer_nll,
            "heldout_nll_variant": res.answer_nll,
            "gptq_model_s": ref.seconds,
            "gptq_per_block_s": per_block,
            "gptq_block_column_loop_median_s": median(list(blocks.values())),
            "grads_examples": args.loop_examples,
            "grads_batched_s": t_batched,
            "grads_loop_s": t_loop,
            "grads_speedup": t_loop / t_batched,
            "grads_repeats": args.repeats,
            "grads_max_rel_diff": rel,
            "threads": torch.get_num_threads(),
        },
    )


if __name__ == "__main__":
    main()
