"""Pipeline speed and memory on the real SmolLM2, ours vs the reference way, in one run.

  1. End-to-end default pipeline (what `python -m tacq run` does) from empty caches: load,
     32 calibration examples, gradients, unmasked 2-bit GPTQ (for dW), TaCQ scores + masked
     2-bit GPTQ, held-out eval; with the fast GPTQ path and with the old one (per Linear,
     whole block passes, no reused grid search: `Study(group_quantizer=baseline_group)`
     from bench/gptq_yardstick.py), each from empty caches. Targets: < 5 minutes, new >= 1.6x faster than old; peak RSS < 4 GB; the same
     held-out NLL both ways (the paths are bit-identical).
  2. GPTQ over the whole model, old vs new on the same calibration batches: the unmasked
     pass and the masked TaCQ pass (target >= 2x), codes compared for bit-identity.
  3. The quick one-click demo (`plan_demo(quick=True)`), old vs new, each from empty caches
     (target >= 1.9x).
  4. Gradients: batched per-sample |grad| (hooks + einsum) vs the reference batch-size-1
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
from gptq_yardstick import baseline_group

from tacq.circuit.select import DEFAULT_RATIO, Selection
from tacq.quant.recipe import Recipe


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, *args) -> float:
    """Seconds one call of fn(*args) takes (CPU: nothing to synchronize)."""
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def _empty_home() -> None:
    """Point every cache at a new empty folder (the converted model stays shared)."""
    os.environ["TACQ_HOME"] = tempfile.mkdtemp(prefix="tacq-speed-")


def pipeline(args, fast: bool) -> dict:
    """The default `python -m tacq run` pipeline from empty caches -> stages, NLLs, objects."""
    from tacq.circuit.gradients import GradientConfig
    from tacq.data.reading import load_task
    from tacq.data.tasks import DataConfig
    from tacq.eval.evaluate import evaluate
    from tacq.models import load_model
    from tacq.study.workflow import Study

    _empty_home()
    stages: dict[str, float] = {}
    t_all = time.perf_counter()
    t = time.perf_counter()
    lm = load_model()
    task = load_task(args.task)
    # as `python -m tacq run` does: TaCQ needs only the |g| sums
    study = Study(
        lm,
        task,
        DataConfig(max_examples=args.examples),
        GradientConfig(extra_stats=False),
        group_quantizer=None if fast else baseline_group,
    )
    stages["load model + data"] = time.perf_counter() - t
    t = time.perf_counter()
    stats = study.collect()
    stages["gradients"] = time.perf_counter() - t
    t = time.perf_counter()
    ref = study.references.get(args.bits)
    stages[f"GPTQ {args.bits}-bit reference (dW)"] = time.perf_counter() - t
    t = time.perf_counter()
    v = study.quantize(Recipe.of(Selection("tacq", args.bits, DEFAULT_RATIO)))
    stages[f"TaCQ scores + masked GPTQ {args.bits}-bit"] = time.perf_counter() - t
    t = time.perf_counter()
    held = list(task.heldout)
    fp, lp = evaluate(lm.model, lm.tokenizer, held, task.style, "fp")
    res, _ = evaluate(v.model, lm.tokenizer, held, task.style, v.name, fp_logprobs=lp)
    stages["held-out eval (fp + variant)"] = time.perf_counter() - t
    total = time.perf_counter() - t_all
    label = "new (fast GPTQ)" if fast else "old (per-Linear GPTQ)"
    print(f"end-to-end stages, {label}:")
    for k, sec in stages.items():
        print(f"  {k:<40} {sec:7.1f} s")
    print(f"  {'total':<40} {total:7.1f} s   target < 300 s")
    print(f"  held-out NLL fp {fp.answer_nll:.4f}  {v.name} {res.answer_nll:.4f}")
    return {
        "stages": stages,
        "total": total,
        "fp_nll": fp.answer_nll,
        "nll": res.answer_nll,
        "study": study,
        "ref": ref,
        "variant": v,
        "stats": stats,
    }


def compare_gptq(study, bits: int) -> dict:
    """Whole-model GPTQ on the same batches, old path vs new: unmasked and masked TaCQ."""
    import torch

    from tacq.formats.grid import GPTQConfig
    from tacq.quant.quantize import quantize_model

    lm, batches, cfg = study.lm, study.batches(answer_only=False), GPTQConfig(bits=bits)
    masks = study.ranking(Selection("tacq", bits, DEFAULT_RATIO)).masks(DEFAULT_RATIO)
    out: dict[str, float] = {}
    t = time.perf_counter()
    old_ref = quantize_model(lm.model, batches, cfg, group_quantizer=baseline_group)
    out["unmasked_old_s"] = time.perf_counter() - t
    t = time.perf_counter()
    new_ref = quantize_model(lm.model, batches, cfg)
    out["unmasked_new_s"] = time.perf_counter() - t
    t = time.perf_counter()
    old = quantize_model(lm.model, batches, cfg, masks, group_quantizer=baseline_group)
    out["masked_old_s"] = time.perf_counter() - t
    t = time.perf_counter()
    new = quantize_model(lm.model, batches, cfg, masks, unmasked=new_ref.qparams())
    out["masked_new_s"] = time.perf_counter() - t
    same = all(
        torch.equal(a.layers[n].codes, b.layers[n].codes)
        and torch.equal(a.layers[n].scale, b.layers[n].scale)
        and torch.equal(a.layers[n].kept_values, b.layers[n].kept_values)
        for a, b in ((old_ref, new_ref), (old, new))
        for n in a.layers
    )
    out["bit_identical"] = same
    out["rows_searched_again_share"] = sum(int(m.any(1).sum()) for m in masks.values()) / sum(
        m.shape[0] for m in masks.values()
    )
    for k in ("unmasked", "masked"):
        out[f"{k}_speedup"] = out[f"{k}_old_s"] / out[f"{k}_new_s"]
        print(
            f"GPTQ {bits}-bit whole model, {k}: old {out[f'{k}_old_s']:.1f} s, "
            f"new {out[f'{k}_new_s']:.1f} s -> x{out[f'{k}_speedup']:.2f} (target >= 2)"
        )
    pair = (out["unmasked_old_s"] + out["masked_old_s"]) / (
        out["unmasked_new_s"] + out["masked_new_s"]
    )
    out["pair_speedup"] = pair
    print(f"  reference + masked together x{pair:.2f}; bit-identical: {same}")
    return out


def demo_time(task: str, fast: bool) -> dict:
    """The quick one-click demo from empty caches -> stage seconds and total."""
    from tacq.data.reading import load_task
    from tacq.data.tasks import DataConfig
    from tacq.models import load_model
    from tacq.study.demo import plan_demo, run_demo
    from tacq.study.workflow import Study

    _empty_home()
    t = time.perf_counter()
    study = Study(
        load_model(),
        load_task(task),
        DataConfig(max_examples=8),
        group_quantizer=None if fast else baseline_group,
    )
    demo = plan_demo(study, quick=True)
    for _ in run_demo(demo):
        pass
    total = time.perf_counter() - t
    nlls = {r.name: r.answer_nll for r in demo.results}
    print(f"quick demo, {'new' if fast else 'old'}: {total:.1f} s {nlls}")
    return {"total_s": total, "stages_s": {s.name: s.elapsed_s for s in demo.stages}, "nll": nlls}


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

    import torch

    from tacq.circuit.gradients import GradientConfig, abs_grads_loop, collect_abs_grads
    from tacq.data.tasks import DataConfig
    from tacq.models import load_model
    from tacq.study.workflow import Study

    load_model()  # warm the file cache, so neither pipeline pays the first read
    new = pipeline(args, fast=True)
    rss = peak_rss_mb()  # one pipeline's peak: measured before anything else runs
    old = pipeline(args, group_quantizer=baseline_group)
    for k in ("study", "ref", "variant", "stats"):
        old.pop(k)  # only the new pipeline's objects are used below
    study, ref, stats = new["study"], new["ref"], new["stats"]
    lm, task = study.lm, study.task
    e2e = old["total"] / new["total"]
    print(
        f"end to end: old {old['total']:.1f} s, new {new['total']:.1f} s -> x{e2e:.2f} "
        f"(target >= 1.6); same NLL: {old['nll'] == new['nll']}"
    )
    print(f"  peak RSS {rss:,.0f} MB   target < 4096 MB")
    gptq = compare_gptq(study, args.bits)
    demo_old = demo_time(args.task, group_quantizer=baseline_group)
    demo_new = demo_time(args.task, fast=True)
    demo_x = demo_old["total_s"] / demo_new["total_s"]
    print(f"quick demo: x{demo_x:.2f} (target >= 1.9)")

    blocks = len({n.split(".layers.")[1].split(".")[0] for n in ref.layers})
    per_block = ref.seconds / max(blocks, 1)

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
            "stages_s": new["stages"],
            "stages_old_s": old["stages"],
            "end_to_end_s": new["total"],
            "end_to_end_old_s": old["total"],
            "end_to_end_speedup": e2e,
            "target_end_to_end_speedup": 1.6,
            "target_end_to_end_s": 300,
            "peak_rss_mb": rss,
            "target_peak_rss_mb": 4096,
            "heldout_nll_fp": new["fp_nll"],
            "heldout_nll_variant": new["nll"],
            "heldout_nll_variant_old": old["nll"],
            "gptq_model_s": ref.seconds,
            "gptq_per_block_s": per_block,
            "gptq_compare": gptq,
            "target_gptq_speedup": 2.0,
            "demo_quick_old": demo_old,
            "demo_quick_new": demo_new,
            "demo_quick_speedup": demo_x,
            "target_demo_quick_speedup": 1.9,
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
