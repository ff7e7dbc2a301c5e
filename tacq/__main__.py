"""The tacq command line: python -m tacq <command> --help.

Each command builds configs from its flags and calls the same library functions the app
uses; stage times are printed so a run can be compared with the benchmarks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from tacq.errors import TacqError  # noqa: E402

EPILOG = """examples:
  python -m tacq tasks
  python -m tacq gradients --task antonyms
  python -m tacq scores --task antonyms --metric tacq --bits 2 --ratio 0.0035
  python -m tacq quantize --task antonyms --bits 2 --out out/antonyms-2bit
  python -m tacq eval --task antonyms --bits 2 --methods fp,rtn,gptq,tacq
  python -m tacq causal --task antonyms --bits 2 --control capitals
  python -m tacq stability --task antonyms --metric msg --across halves
  python -m tacq fit --task records --keep 0.9   # the smallest variant that keeps it
  python -m tacq run            # the default end-to-end study with stage times
  python -m tacq cache --clear  # list (or clear) the gradient and GPTQ caches
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="default",
        help="'default' (bundled SmolLM2-135M-Instruct) or a local HF folder",
    )
    p.add_argument("--task", default="antonyms", help="bundled task name (see `tasks`)")
    p.add_argument(
        "--data",
        help="your own examples: JSONL/CSV with prompt,answer and optionally split "
        "(calib/dev/heldout; rows without one: every 4th held out); overrides --task",
    )
    p.add_argument(
        "--style",
        choices=("completion", "chat"),
        default="completion",
        help="how --data prompts are shown to the model (default: completion)",
    )
    p.add_argument("--examples", type=int, default=32, help="calibration examples (default 32)")
    p.add_argument("--max-length", type=int, default=256, help="tokens per example (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="examples per gradient batch")
    p.add_argument("--answer-only", action="store_true", help="loss on answer tokens only")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument(
        "--device-map",
        choices=("auto", "balanced", "sequential"),
        help="let accelerate split a model too big for one GPU over the GPUs and host memory",
    )
    p.add_argument(
        "--max-memory",
        type=_max_memory,
        help="with --device-map: budget per device, e.g. '0=70GiB,1=70GiB,cpu=200GiB'",
    )
    p.add_argument(
        "--stream-to",
        help="keep the model on --device (e.g. cpu) and move one block at a time to this "
        "device (e.g. cuda) for GPTQ: for models larger than the GPU",
    )


def _max_memory(text: str) -> dict[int | str, str]:
    """'0=70GiB,cpu=200GiB' -> {0: '70GiB', 'cpu': '200GiB'} (accelerate's max_memory)."""
    budget: dict[int | str, str] = {}
    for part in filter(None, text.split(",")):
        dev, sep, amount = part.partition("=")
        if not sep or not amount.strip():
            raise argparse.ArgumentTypeError(f"expected DEVICE=AMOUNT, got {part!r}")
        dev = dev.strip()
        budget[int(dev) if dev.isdigit() else dev] = amount.strip()
    return budget


def _scored(p: argparse.ArgumentParser) -> None:
    """Which examples a score is read on: held-out to report, dev to tune settings."""
    p.add_argument(
        "--split",
        default="heldout",
        choices=("heldout", "dev"),
        help="score on the held-out split (default; report) or the dev split (tune)",
    )
    p.add_argument("--limit", type=int, help="score the first N examples of the split only")


def _quant(p: argparse.ArgumentParser, metric: bool = True) -> None:
    """The selection's flags (bit width, group size, ratio, score), from the Recipe."""
    from tacq.recipe_flags import SELECTION_FIELDS, add_recipe_flags

    add_recipe_flags(p, tuple(f for f in SELECTION_FIELDS if metric or f != "metric"))


def build_parser() -> argparse.ArgumentParser:
    from tacq.recipe_flags import add_recipe_flags, add_settings_flag

    parser = argparse.ArgumentParser(
        prog="python -m tacq",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="TaCQ: task-aware low-bit quantization. Finds the weights a task "
        "depends on (its 'circuit') from per-sample gradients, keeps them in 16 "
        "bits and quantizes the rest to 2/3/4 bits with masked GPTQ.",
        epilog=EPILOG,
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tasks", help="list bundled task sets")
    p = sub.add_parser("gradients", help="collect per-sample |grad| sums (cached)")
    _common(p)
    p = sub.add_parser("scores", help="rank weights by a saliency metric; print where they live")
    _common(p)
    _quant(p)
    p.add_argument("--top", type=int, default=10, help="how many Linears to list")
    p = sub.add_parser(
        "export-scores", help="scores, rankings and masks as safetensors, for notebooks"
    )
    _common(p)
    _quant(p, metric=False)
    p.add_argument("--metrics", default="tacq", help="comma list of metrics (default tacq)")
    p.add_argument("--out", required=True, help="output folder")
    p = sub.add_parser(
        "heads", help="the circuit per attention head or MLP neuron (kept weights, score)"
    )
    _common(p)
    _quant(p)
    p.add_argument(
        "--unit",
        default="query",
        choices=("query", "kv", "neurons"),
        help="query heads (q rows + o columns), key/value heads (k, v rows) or MLP neurons",
    )
    p.add_argument("--top", type=int, default=10, help="how many heads or neurons to list")
    p = sub.add_parser(
        "causal", help="damage only the circuit's weights (and same-size controls); measure"
    )
    _common(p)
    _quant(p)
    p.add_argument("--damage", default="round", choices=("round", "zero"))
    p.add_argument("--control", help="bundled control task (default: the first other one)")
    p.add_argument("--seeds", type=int, default=3, help="random same-count controls (default 3)")
    p.add_argument(
        "--scored",
        type=int,
        default=32,
        help="first N held-out examples of the task and the control (0: all; default 32)",
    )
    p = sub.add_parser(
        "stability",
        help="would other examples, scores or tasks give the same circuit? (Jaccard overlaps)",
    )
    _common(p)
    _quant(p)
    p.add_argument(
        "--across",
        default="halves",
        choices=("seeds", "halves", "metrics", "tasks"),
        help="calibration samples, the two halves of the examples, scores, or bundled tasks",
    )
    p.add_argument("--seeds", type=int, default=3, help="with --across seeds (default 3)")
    p.add_argument("--metrics", default="tacq,qal,msg,magnitude", help="with --across metrics")
    p.add_argument("--tasks", help="with --across tasks: comma list (default: all bundled)")
    p = sub.add_parser(
        "quantize", aliases=["export"], help="quantize with masked GPTQ and save the model"
    )
    _common(p)
    add_recipe_flags(p, unset=True)
    add_settings_flag(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--format",
        default="packed",
        choices=("packed", "dequantized"),
        help="packed (small, needs tacq) or dequantized fp16 HF folder",
    )
    p = sub.add_parser(
        "fit", help="the smallest variant that keeps your task, chosen on dev examples"
    )
    _common(p)
    p.add_argument(
        "--keep",
        type=float,
        default=0.9,
        help="share of the original's dev exact match to keep (default 0.9)",
    )
    p.add_argument("--bits", default="2,3,4", help="bit widths to try, comma list (default 2,3,4)")
    p.add_argument(
        "--max-candidates", type=int, help="score at most N candidates (a quicker, partial look)"
    )
    p.add_argument("--out", help="save the chosen variant here (packed)")
    p.add_argument("--json", help="write the search and its answer to this JSON file")
    p = sub.add_parser("eval", help="held-out NLL / exact match / KL: fp vs quantized methods")
    _common(p)
    _quant(p, metric=False)
    _scored(p)
    p.add_argument(
        "--methods",
        default="fp,rtn,gptq,tacq",
        help="comma list from fp,rtn,gptq and any metric name (default fp,rtn,gptq,tacq)",
    )
    p = sub.add_parser("load-check", help="load a packed folder; print BPW, size, an answer")
    p.add_argument("folder", help="a folder written by `quantize --format packed`")
    p.add_argument("--prompt", default="hot -> cold\nbig -> small\nfast ->")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p = sub.add_parser("run", help="default end-to-end: gradients + TaCQ + held-out eval")
    _common(p)
    _quant(p)
    _scored(p)
    p = sub.add_parser("demo", help="the app's one-click demo: TaCQ 3/2-bit + GPTQ 2-bit, eval")
    _common(p)
    p.add_argument("--quick", action="store_true", help="skip the 3-bit variant")
    p = sub.add_parser(
        "plan", help="estimated peak memory and time of each stage; refuses a run that will not fit"
    )
    p.add_argument(
        "--model",
        default="default",
        help="'default', a local HF folder (only config.json is read), or llama-3-8b",
    )
    p.add_argument("--examples", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--bits", type=int, default=2, choices=(2, 3, 4))
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when present")
    p.add_argument("--tflops", type=float, help="device throughput, if not measurable here")
    p.add_argument("--memory-gb", type=float, help="device memory to plan for (default: free)")
    p.add_argument(
        "--host-memory-gb",
        type=float,
        help="host memory of the machine planned for (default: this machine's free memory, "
        "unless --memory-gb or --tflops describe another machine: then not checked)",
    )
    p.add_argument("--accum-on-host", action="store_true", help="gradient sums in host memory")
    p.add_argument("--accum-bf16", action="store_true", help="gradient sums in bf16")
    p.add_argument(
        "--extra-stats",
        action="store_true",
        help="also sum g^2 and g in the same pass (Fisher, signed gradient, SqueezeLLM-like)",
    )
    p.add_argument("--tacq-only", action="store_true", help=argparse.SUPPRESS)  # now the default
    p = sub.add_parser("cache", help="size of the gradient and GPTQ caches; --clear empties them")
    p.add_argument(
        "--clear",
        nargs="?",
        const="all",
        choices=("all", "grads", "quant"),
        help="delete the cached files (all, or only grads or quant); they are recomputed on use",
    )
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    return parser


def _needs_extra(args) -> bool:
    from tacq.saliency import METRICS

    wanted = {getattr(args, "metric", "tacq")} | set(getattr(args, "methods", "").split(","))
    if getattr(args, "across", None) == "metrics":
        wanted |= set(args.metrics.split(","))
    return any(METRICS[m].needs_extra for m in wanted if m in METRICS)


def _study(args):
    from tacq.data import DataConfig, load_task, read_task, split_counts
    from tacq.gradients import GradientConfig
    from tacq.models import load_model
    from tacq.workflow import Study

    t0 = time.perf_counter()
    lm = load_model(args.model, args.device, device_map=args.device_map, max_memory=args.max_memory)
    task = read_task(args.data, args.style) if args.data else load_task(args.task)
    study = Study(
        lm,
        task,
        DataConfig(args.max_length, args.examples),
        GradientConfig(
            batch_size=args.batch_size,
            answer_only=args.answer_only,
            extra_stats=_needs_extra(args),  # g^2 and signed sums only when a metric uses them
        ),
        exec_device=args.stream_to,
    )
    print(
        f"model {lm.name} loaded in {time.perf_counter() - t0:.1f} s; task {task.name}: "
        f"{split_counts(task)} examples ({len(study.calib_examples)} calibration used)"
    )
    return study


def _collect(study) -> None:
    from tacq.progress import cli_progress

    stats = study.collect(cli_progress("gradients"))
    how = "from cache" if stats.from_cache else f"in {stats.seconds:.1f} s"
    print(
        f"gradients: {stats.n_samples} samples, {stats.n_tokens} loss tokens, "
        f"mean loss {stats.mean_loss:.3f} ({how})"
    )


def cmd_tasks(args) -> None:
    from tacq.data import list_tasks, load_task

    for name, meta in list_tasks().items():
        t = load_task(name)
        print(
            f"{name:<16} {meta.get('style', 'completion'):<10} {len(t.calib):>3} calib "
            f"{len(t.heldout):>3} held-out  {meta.get('description', '')}"
        )


def cmd_gradients(args) -> None:
    from tacq.distributed import init_from_env, launched_by_torchrun

    if not launched_by_torchrun():
        _collect(_study(args))
        return
    rank, world = init_from_env()
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # one rank reports  # noqa: SIM115
    import torch.distributed as dist

    from tacq.distributed import leave_process_group

    try:
        _collect(_study(args))
        print(f"(data-parallel over {world} processes; sums all-reduced once)")
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_process_group()  # the cache is written; gloo's teardown can abort (see there)


def cmd_scores(args) -> None:
    from tacq.progress import cli_progress
    from tacq.select import layer_table

    study = _study(args)
    _collect(study)
    sel = _selection(args)
    r = study.ranking(sel, cli_progress("reference"))
    size = study.size_at(sel, r)
    table = layer_table(r, args.ratio).sort_values("kept", ascending=False).head(args.top)
    print(
        f"{args.metric}: keeps {size.n_kept:,} of {size.n_weights:,} weights; "
        f"BPW {size.bpw_paper:.4f} (paper), {size.bpw_honest:.3f} with stats; "
        f"{size.total_bytes / 2**20:.1f} MB packed vs {size.fp16_bytes / 2**20:.1f} MB fp16"
    )
    print(table.to_string(index=False, formatters={"share": "{:.3%}".format}))


def cmd_heads(args) -> None:
    from tacq.anatomy import heads_grid, top_neurons
    from tacq.progress import cli_progress

    study = _study(args)
    _collect(study)
    sel = _selection(args)
    study.ranking(sel, cli_progress("reference"))
    heads = study.anatomy(sel, args.unit)
    if args.unit == "neurons":
        print(f"top {args.top} MLP neurons by kept weights ({args.metric}, {args.ratio:.2%}):")
        print(top_neurons(heads, args.top).to_string(index=False))
        return
    grid = heads_grid(heads)
    print(f"kept share per {args.unit} head (rows: layers; {args.metric}, {args.ratio:.2%}):")
    print(grid.to_string(float_format=lambda v: f"{v:.2%}"))
    best = heads.sort_values("kept", ascending=False).head(args.top)
    print(f"\ntop {args.top} heads:")
    print(best.to_string(index=False))


def cmd_causal(args) -> None:
    from tacq.causal import CausalConfig, causal_test
    from tacq.progress import cli_progress

    cfg = CausalConfig(args.damage, args.seeds, args.scored, args.scored)
    study = _study(args)
    _collect(study)
    t0 = time.perf_counter()
    res = causal_test(study, _selection(args), args.control, cfg, cli_progress("causal test"))
    print(res.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(res.summary())
    print(f"causal test: {time.perf_counter() - t0:.1f} s")


def cmd_stability(args) -> None:
    from tacq.progress import cli_progress
    from tacq.stability import stability

    study = _study(args)
    t0 = time.perf_counter()
    res = stability(
        study,
        _selection(args),
        args.across,
        args.seeds,
        tuple(args.metrics.split(",")),
        tuple(args.tasks.split(",")) if args.tasks else (),
        cli_progress(f"stability across {args.across}"),
    )
    print("Jaccard overlap of the kept sets:")
    print(res.matrix.to_string(float_format=lambda v: f"{v:.3f}"))
    print(res.pairs().to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(res.shared.to_string(index=False))
    print(res.summary())
    print(f"stability: {time.perf_counter() - t0:.1f} s")


def cmd_export_scores(args) -> None:
    from tacq.progress import cli_progress
    from tacq.saliency import METRICS
    from tacq.score_export import save_scores

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if bad := [m for m in metrics if m not in METRICS]:
        raise TacqError(f"Unknown metric {bad[0]!r}; choose from {', '.join(METRICS)}.")
    study = _study(args)
    if any(METRICS[m].needs_grads for m in metrics):
        _collect(study)
    from tacq.select import Selection

    sel = Selection(metrics[0], args.bits, args.ratio, args.group_size)
    folder = save_scores(study, args.out, metrics, sel, cli_progress("scores"))
    size = (folder / "scores.safetensors").stat().st_size
    print(
        f"wrote {folder} ({size / 2**20:.1f} MB): scores, rankings and masks at "
        f"{sel.ratio:.2%} for {', '.join(metrics)}"
    )


def cmd_quantize(args) -> None:
    from tacq.progress import cli_progress
    from tacq.recipe_flags import recipe_from_args
    from tacq.saliency import METRICS

    recipe = recipe_from_args(args)  # a bad combination is refused before the model loads
    study = _study(args)
    if recipe.ratio > 0 and METRICS[recipe.metric].needs_grads:
        _collect(study)
    t = time.perf_counter()
    v = study.quantize(recipe, cli_progress("quantize"))
    print(
        f"{v.name}: quantized in {time.perf_counter() - t:.1f} s; BPW {v.size.bpw_paper:.4f} "
        f"(paper), {v.size.bpw_honest:.3f} with scales and indices; holds "
        f"{v.resident_bytes / 2**20:.1f} MB in memory beside the shared original"
    )
    from tacq import export

    out = Path(args.out)
    if args.format == "packed":
        export.save_packed(out, study.lm, v)
    else:
        export.save_dequantized(out, study.lm, v)
    print(f"saved {args.format} model to {out} ({export.folder_bytes(out) / 2**20:.1f} MB)")


def cmd_fit(args) -> None:
    import json

    import pandas as pd

    from tacq.autofit import check_bits, check_keep, fit
    from tacq.progress import cli_progress

    check_keep(args.keep)  # what is refused is refused before the model loads
    bits = check_bits(b for b in args.bits.split(",") if b.strip())
    if args.max_candidates is not None and args.max_candidates < 1:
        raise TacqError("Auto-fit needs at least one candidate (--max-candidates).")
    study = _study(args)
    result = fit(study, args.keep, bits, args.max_candidates, cli_progress("fit"))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(result.table().to_string(index=False))
    print(result.summary().replace("**", ""))
    if args.json:
        Path(args.json).write_text(json.dumps(result.record(), indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.out and result.variant is not None:
        from tacq import export

        export.save_packed(Path(args.out), study.lm, result.variant)
        print(f"saved {result.variant.name} to {args.out}")


def _selection(args):
    from tacq.select import Selection

    return Selection(args.metric, args.bits, args.ratio, args.group_size)


def _compare(study, args, methods: list[str]):
    """Held-out table and stage times of `methods` (tacq.runs.compare_methods)."""
    from tacq.progress import cli_progress
    from tacq.runs import compare_methods

    if args.limit is not None and args.limit < 1:
        raise TacqError(f"--limit must be at least 1 (got {args.limit}).")
    examples = study.task.split(args.split)[: args.limit]
    if not examples:
        raise TacqError(f"The task has no {args.split} examples to evaluate on.")
    results, times = compare_methods(
        study, methods, args.bits, args.ratio, cli_progress, args.group_size, list(examples)
    )
    return results, times


def cmd_eval(args) -> None:
    from tacq.runs import check_methods, needs_gradients
    from tacq.stats import paired_table
    from tacq.tables import results_table

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    check_methods(methods)
    study = _study(args)
    if needs_gradients(methods):
        _collect(study)
    results, times = _compare(study, args, methods)
    print(results_table(results).to_string(index=False))
    if len(results) > 1:
        print(f"\npaired, on the same {args.split} examples (A - B; negative NLL: A better):")
        print(paired_table(results).to_string(index=False))
    for k, v in times.items():
        print(f"  {k:<32} {v:7.1f} s")


def cmd_load_check(args) -> None:
    from tacq.export import load_check

    check = load_check(args.folder, args.prompt, args.device)
    print(f"loaded in {check.seconds:.1f} s")
    for k, v in check.info.items():
        print(f"  {k:<18} {v}")
    print(f"prompt: {args.prompt!r}\nanswer: {check.answer!r}")


def cmd_run(args) -> None:
    from tacq.tables import results_table

    t_all = time.perf_counter()
    t = time.perf_counter()
    study = _study(args)
    stages = {"load model + data": time.perf_counter() - t}
    t = time.perf_counter()
    _collect(study)
    stages["gradients"] = time.perf_counter() - t
    results, times = _compare(study, args, ["fp", args.metric])
    stages |= times
    print(results_table(results).to_string(index=False))
    print("stage times:")
    for k, v in stages.items():
        print(f"  {k:<32} {v:7.1f} s")
    print(f"  {'total':<32} {time.perf_counter() - t_all:7.1f} s")


def cmd_demo(args) -> None:
    from tacq.demo import plan_demo, run_demo
    from tacq.progress import cli_progress
    from tacq.tables import gallery, results_table, variants_table

    study = _study(args)
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


def cmd_plan(args) -> None:
    from tacq.plan import RunSettings, plan_here

    settings = RunSettings(
        args.examples,
        args.max_length,
        args.batch_size,
        args.bits,
        accum_bytes=2 if args.accum_bf16 else 4,
        accum_stats=3 if args.extra_stats else 1,
        accum_on_host=args.accum_on_host,
    )
    auto = not (args.accum_bf16 or args.accum_on_host)  # where a collection would put them
    plan = plan_here(
        args.model, settings, args.device, args.tflops, args.memory_gb, auto, args.host_memory_gb
    )
    print(plan.text())
    plan.check()
    print("fits.")


def cmd_cache(args) -> None:
    import json

    from tacq.cache import CAPPED, tacq_home
    from tacq.cache_admin import cache_cap_bytes, clear, human_bytes, usage

    if args.clear:
        n, freed, kept = clear(CAPPED if args.clear == "all" else (args.clear,))
        print(f"removed {n} file{'s' * (n != 1)}: freed {freed:,} bytes ({human_bytes(freed)})")
        if kept:
            print(f"{kept} in use by this process kept")
        return
    listed, cap = usage(), cache_cap_bytes()
    if args.json:
        out = {k: {"files": n, "bytes": b} for k, (n, b) in listed.items()}
        print(json.dumps({**out, "cap_bytes": cap, "folder": str(tacq_home())}))
        return
    for name, (n, b) in listed.items():
        files = f"{n} file" + "s" * (n != 1)
        print(f"{name:<6} {files:>11} {human_bytes(b):>9}  {tacq_home() / name}")
    print(
        f"cap {human_bytes(cap)} for both (TACQ_CACHE_GB, else the smaller of 20 GB and a "
        "quarter of the free disk); least recently used files go first"
    )


COMMANDS = {
    "tasks": cmd_tasks,
    "gradients": cmd_gradients,
    "scores": cmd_scores,
    "heads": cmd_heads,
    "causal": cmd_causal,
    "stability": cmd_stability,
    "export-scores": cmd_export_scores,
    "quantize": cmd_quantize,
    "export": cmd_quantize,
    "eval": cmd_eval,
    "load-check": cmd_load_check,
    "run": cmd_run,
    "plan": cmd_plan,
    "demo": cmd_demo,
    "fit": cmd_fit,
    "cache": cmd_cache,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not sys.stderr.isatty():  # a log: no redrawn bars from the libraries either
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        COMMANDS[args.command](args)
    except TacqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing partial was saved", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
