"""Runs made of several steps, which the CLI's eval and run commands forward to."""

from __future__ import annotations

import time
from collections.abc import Callable

from tacq.circuit.saliency import METRICS
from tacq.data.tasks import Example
from tacq.errors import TacqError
from tacq.eval.evaluate import EvalResult, evaluate
from tacq.progress import Progress
from tacq.quant.recipe import Recipe
from tacq.study.workflow import Study

PLAIN_METHODS = ("rtn", "gptq")  # quantize everything; no circuit kept


def check_methods(methods: list[str]) -> None:
    """fp, rtn, gptq, or a metric name (masked GPTQ keeping that metric's circuit)."""
    bad = [m for m in methods if m != "fp" and m not in PLAIN_METHODS and m not in METRICS]
    if bad or not methods:
        choices = ", ".join(["fp", *PLAIN_METHODS, *METRICS])
        raise TacqError(f"Unknown method {bad[0] if bad else ''!r}; choose from {choices}.")


def needs_gradients(methods: list[str]) -> bool:
    return any(m in METRICS and METRICS[m].needs_grads for m in methods)


def compare_methods(
    study: Study,
    methods: list[str],
    bits: int,
    ratio: float,
    progress_for: Callable[[str], Progress | None] = lambda name: None,
    group_size: int | None = None,
    examples: list[Example] | None = None,
) -> tuple[list[EvalResult], dict[str, float]]:
    """The original model and each method on `examples` (default: the held-out split),
    one variant at a time.

    -> (results, fp first when asked for; seconds per stage). progress_for(name) gives
    the progress hook of each quantization (the CLI's bars).
    """
    check_methods(methods)
    lm, style = study.lm, study.task.style
    held = list(study.task.heldout if examples is None else examples)
    times: dict[str, float] = {}
    t = time.perf_counter()
    fp, fp_lp = evaluate(lm.model, lm.tokenizer, held, style, "original")
    times["eval original"] = time.perf_counter() - t
    results = [fp] if "fp" in methods else []
    for m in [m for m in methods if m != "fp"]:
        t = time.perf_counter()
        if m in PLAIN_METHODS:
            recipe = Recipe(bits=bits, ratio=0.0, group_size=group_size, method=m)
        else:
            recipe = Recipe(bits=bits, metric=m, ratio=ratio, group_size=group_size)
        v = study.quantize(recipe, progress_for(m))
        times[f"quantize {v.name}"] = time.perf_counter() - t
        t = time.perf_counter()
        res, _ = evaluate(v.model, lm.tokenizer, held, style, v.name, fp_logprobs=fp_lp)
        times[f"eval {v.name}"] = time.perf_counter() - t
        results.append(res)
        del v  # one variant in memory at a time
    return results, times
