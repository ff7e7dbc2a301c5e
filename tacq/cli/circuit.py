"""Commands about the circuit: tasks, gradients, scores, heads, causal, stability,
export-scores."""

from __future__ import annotations

import os
import sys
import time

from tacq.cli.common import collect_gradients, selection_from_args, study_from_args
from tacq.errors import TacqError


def cmd_tasks(args) -> None:
    from tacq.data.reading import load_task
    from tacq.data.tasks import fresh_tasks, list_tasks

    fresh = fresh_tasks()
    for name, meta in [*list_tasks().items(), *fresh.items()]:
        t = load_task(name)
        never = " (never tuned on)" if name in fresh else ""
        print(
            f"{name:<16} {meta.get('style', 'completion'):<10} {len(t.calib):>3} calib "
            f"{len(t.heldout):>3} held-out  {meta.get('description', '')}{never}"
        )


def cmd_gradients(args) -> None:
    from tacq.circuit.distributed import init_from_env, launched_by_torchrun

    if not launched_by_torchrun():
        collect_gradients(study_from_args(args))
        return
    rank, world = init_from_env()
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # one rank reports  # noqa: SIM115
    import torch.distributed as dist

    from tacq.circuit.distributed import leave_process_group

    try:
        collect_gradients(study_from_args(args))
        print(f"(data-parallel over {world} processes; sums all-reduced once)")
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_process_group()  # the cache is written; gloo's teardown can abort (see there)


def cmd_scores(args) -> None:
    from tacq.circuit.select import layer_table
    from tacq.progress import cli_progress

    study = study_from_args(args)
    collect_gradients(study)
    sel = selection_from_args(args)
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
    from tacq.circuit.anatomy import heads_grid, top_neurons
    from tacq.progress import cli_progress

    study = study_from_args(args)
    collect_gradients(study)
    sel = selection_from_args(args)
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
    from tacq.circuit.causal import CausalConfig, causal_test
    from tacq.progress import cli_progress

    cfg = CausalConfig(args.damage, args.seeds, args.scored, args.scored)
    study = study_from_args(args)
    collect_gradients(study)
    t0 = time.perf_counter()
    res = causal_test(
        study, selection_from_args(args), args.control, cfg, cli_progress("causal test")
    )
    print(res.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(res.summary())
    print(f"causal test: {time.perf_counter() - t0:.1f} s")


def cmd_stability(args) -> None:
    from tacq.circuit.stability import stability
    from tacq.progress import cli_progress

    study = study_from_args(args)
    t0 = time.perf_counter()
    res = stability(
        study,
        selection_from_args(args),
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
    from tacq.circuit.saliency import METRICS
    from tacq.circuit.score_export import save_scores
    from tacq.progress import cli_progress

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if bad := [m for m in metrics if m not in METRICS]:
        raise TacqError(f"Unknown metric {bad[0]!r}; choose from {', '.join(METRICS)}.")
    study = study_from_args(args)
    if any(METRICS[m].needs_grads for m in metrics):
        collect_gradients(study)
    from tacq.circuit.select import Selection

    sel = Selection(metrics[0], args.bits, args.ratio, args.group_size)
    folder = save_scores(study, args.out, metrics, sel, cli_progress("scores"))
    size = (folder / "scores.safetensors").stat().st_size
    print(
        f"wrote {folder} ({size / 2**20:.1f} MB): scores, rankings and masks at "
        f"{sel.ratio:.2%} for {', '.join(metrics)}"
    )
