"""Commands that make and score variants: quantize, fit, eval, load-check, run, demo."""

from __future__ import annotations

import time
from pathlib import Path

from tacq.cli.common import collect_gradients, compare_on_split, study_from_args
from tacq.errors import TacqError


def cmd_quantize(args) -> None:
    from tacq.circuit.saliency import METRICS
    from tacq.cli.recipe_flags import recipe_from_args
    from tacq.progress import cli_progress

    recipe = recipe_from_args(args)  # a bad combination is refused before the model loads
    study = study_from_args(args)
    if recipe.ratio > 0 and METRICS[recipe.metric].needs_grads:
        collect_gradients(study)
    t = time.perf_counter()
    v = study.quantize(recipe, cli_progress("quantize"))
    print(
        f"{v.name}: quantized in {time.perf_counter() - t:.1f} s; BPW {v.size.bpw_paper:.4f} "
        f"(paper), {v.size.bpw_honest:.3f} with scales and indices; holds "
        f"{v.resident_bytes / 2**20:.1f} MB in memory beside the shared original"
    )
    from tacq.formats import export

    out = Path(args.out)
    if args.format == "packed":
        export.save_packed(out, study.lm, v)
    else:
        export.save_dequantized(out, study.lm, v)
    print(f"saved {args.format} model to {out} ({export.folder_bytes(out) / 2**20:.1f} MB)")


def cmd_fit(args) -> None:
    import json

    import pandas as pd

    from tacq.progress import cli_progress
    from tacq.study.autofit import check_bits, check_keep, fit

    check_keep(args.keep)  # what is refused is refused before the model loads
    bits = check_bits(b for b in args.bits.split(",") if b.strip())
    if args.max_candidates is not None and args.max_candidates < 1:
        raise TacqError("Auto-fit needs at least one candidate (--max-candidates).")
    study = study_from_args(args)
    result = fit(study, args.keep, bits, args.max_candidates, cli_progress("fit"))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(result.table().to_string(index=False))
    print(result.summary().replace("**", ""))
    if args.json:
        Path(args.json).write_text(json.dumps(result.record(), indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.out and result.variant is not None:
        from tacq.formats import export

        export.save_packed(Path(args.out), study.lm, result.variant)
        print(f"saved {result.variant.name} to {args.out}")


def cmd_eval(args) -> None:
    from tacq.eval.stats import paired_table
    from tacq.study.runs import check_methods, needs_gradients
    from tacq.study.tables import results_table

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    check_methods(methods)
    study = study_from_args(args)
    if needs_gradients(methods):
        collect_gradients(study)
    results, times = compare_on_split(study, args, methods)
    print(results_table(results).to_string(index=False))
    if len(results) > 1:
        print(f"\npaired, on the same {args.split} examples (A - B; negative NLL: A better):")
        print(paired_table(results).to_string(index=False))
    for k, v in times.items():
        print(f"  {k:<32} {v:7.1f} s")


def cmd_load_check(args) -> None:
    from tacq.formats.export import load_check

    check = load_check(args.folder, args.prompt, args.device)
    print(f"loaded in {check.seconds:.1f} s")
    for k, v in check.info.items():
        print(f"  {k:<18} {v}")
    print(f"prompt: {args.prompt!r}\nanswer: {check.answer!r}")


def cmd_run(args) -> None:
    from tacq.study.tables import results_table

    t_all = time.perf_counter()
    t = time.perf_counter()
    study = study_from_args(args)
    stages = {"load model + data": time.perf_counter() - t}
    t = time.perf_counter()
    collect_gradients(study)
    stages["gradients"] = time.perf_counter() - t
    results, times = compare_on_split(study, args, ["fp", args.metric])
    stages |= times
    print(results_table(results).to_string(index=False))
    print("stage times:")
    for k, v in stages.items():
        print(f"  {k:<32} {v:7.1f} s")
    print(f"  {'total':<32} {time.perf_counter() - t_all:7.1f} s")


def cmd_demo(args) -> None:
    from tacq.progress import cli_progress
    from tacq.study.demo import plan_demo, run_demo
    from tacq.study.tables import gallery, results_table, variants_table

    study = study_from_args(args)
    demo = plan_demo(study, quick=args.quick)
    print(f"one-click demo: {len(demo.stages)} stages, expected {demo.expected_s / 60:.1f} min")
    for d in run_demo(demo, cli_progress("demo")):
        s = next((s for s in reversed(d.stages) if s.status != "waiting"), d.stages[0])
        if s.status == "done":
            print(f"  {s.name:<40} {s.elapsed_s:6.1f} s  (expected {s.expected_s:.0f} s)")
    print(variants_table(demo.variants).to_string(index=False))
    print(results_table(demo.results).to_string(index=False))
    bpw = {v.name: v.size.bpw_honest for v in demo.variants}
    print(gallery(demo.results, bpw).to_string(index=False))
    print(f"total {demo.elapsed_s:.1f} s ({demo.elapsed_s / 60:.2f} min)")
