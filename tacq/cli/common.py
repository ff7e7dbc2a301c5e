"""What the commands share: the study their flags describe, collecting its gradients, the
selection, and the scored comparison of methods."""

from __future__ import annotations

import time

from tacq.errors import TacqError


def _needs_extra(args) -> bool:
    from tacq.circuit.saliency import METRICS

    wanted = {getattr(args, "metric", "tacq")} | set(getattr(args, "methods", "").split(","))
    if getattr(args, "across", None) == "metrics":
        wanted |= set(args.metrics.split(","))
    return any(METRICS[m].needs_extra for m in wanted if m in METRICS)


def study_from_args(args):
    from tacq.circuit.gradients import GradientConfig
    from tacq.data.reading import load_task, read_task
    from tacq.data.tasks import DataConfig, split_counts
    from tacq.models import load_model
    from tacq.study.workflow import Study

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


def collect_gradients(study) -> None:
    from tacq.progress import cli_progress

    stats = study.collect(cli_progress("gradients"))
    how = "from cache" if stats.from_cache else f"in {stats.seconds:.1f} s"
    print(
        f"gradients: {stats.n_samples} samples, {stats.n_tokens} loss tokens, "
        f"mean loss {stats.mean_loss:.3f} ({how})"
    )


def selection_from_args(args):
    from tacq.circuit.select import Selection

    return Selection(args.metric, args.bits, args.ratio, args.group_size)


def compare_on_split(study, args, methods: list[str]):
    """Held-out table and stage times of `methods` (tacq.study.runs.compare_methods)."""
    from tacq.progress import cli_progress
    from tacq.study.runs import compare_methods

    if args.limit is not None and args.limit < 1:
        raise TacqError(f"--limit must be at least 1 (got {args.limit}).")
    examples = study.task.split(args.split)[: args.limit]
    if not examples:
        raise TacqError(f"The task has no {args.split} examples to evaluate on.")
    results, times = compare_methods(
        study, methods, args.bits, args.ratio, cli_progress, args.group_size, list(examples)
    )
    return results, times
