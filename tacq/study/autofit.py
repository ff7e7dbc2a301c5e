"""Auto-fit: the smallest variant that still does the user's task, chosen on dev examples.

Why: a practitioner's question is "how small can my task's model get?", not "which of six
levers". The search tries a short list of recipes the benchmarks measured (the measured
preset at 2, 3 and 4 bits, then more or fewer kept weights, then scales per 128 inputs) in
increasing honest bits per weight, scores each on the task's **dev** split, and picks the
smallest whose dev exact match is at least `keep` times the original model's. A bit width
is not tried once a lower one met the target. The choice alone is then scored on held-out,
once, so the reported number did not pick itself. Every cache (gradients, the reference
quantization per bit width, its scales) is shared by all candidates through one Study.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import pandas as pd
from torch import nn

from tacq.data.tasks import TaskSet
from tacq.errors import TacqError
from tacq.eval.evaluate import EvalResult, evaluate
from tacq.eval.stats import Interval, intervals
from tacq.formats.sizes import size_report
from tacq.models import quantizable_linears, unquantized_params
from tacq.progress import Progress, no_progress, scaled
from tacq.quant.recipe import Recipe
from tacq.quant.variant import Variant

FIT_BITS = (2, 3, 4)
KEPT_SHARES = (0.002, 0.0035, 0.005)  # kept weights tried beside the preset's, at 2 and 3 bits
WIDE_GROUP = 128  # then one scale and zero per 128 inputs: the common GPTQ default
MIN_DEV = 16  # fewer dev examples cannot tell a candidate that keeps the task from one that
# does not (one example moves exact match by more than 6 points)
DEV_EVERY = 4  # with no dev split, every 4th calibration example is dev


FRONTIER_COLUMNS = (
    "variant", "settings", "bits per weight", "dev exact match", "dev answer NLL",
    "NLL 95 % interval", "keeps the task", "chosen", "seconds",
)  # fmt: skip


@dataclass(frozen=True)
class FitPoint:
    """One candidate scored on dev."""

    recipe: Recipe
    name: str
    bpw_honest: float
    dev_nll: Interval
    dev_em: float
    meets: bool  # dev exact match >= keep x the original's
    seconds: float  # to quantize and score it (caches it filled included)


@dataclass
class FitResult:
    keep: float
    dev_note: str  # where the dev examples came from
    fp_dev: EvalResult
    points: list[FitPoint] = field(default_factory=list)
    skipped: list[tuple[Recipe, str]] = field(default_factory=list)  # not run, and why
    chosen: FitPoint | None = None
    variant: Variant | None = None  # the chosen candidate, ready to chat with or export
    heldout: tuple[EvalResult, EvalResult] | None = None  # (original, chosen) on held-out
    seconds: float = 0.0

    @property
    def target_em(self) -> float:
        return self.keep * self.fp_dev.exact_match

    def summary(self) -> str:
        """The answer in one paragraph: what was chosen, on what evidence, or why nothing."""
        fp_em = self.fp_dev.exact_match
        head = (
            f"Original model: dev exact match {fp_em:.3f}; target {self.keep:g} x = "
            f"{self.target_em:.3f}. {self.dev_note}"
        )
        if fp_em == 0:
            head += (
                " The original gets none of them right, so exact match cannot tell what a "
                "candidate keeps: read the answer NLL beside it."
            )
        if self.chosen is None:
            return (
                f"{head} No candidate of {len(self.points)} scored kept the task at that "
                f"level (best dev exact match {max((p.dev_em for p in self.points), default=0):.3f}"
                f"); see the frontier. Searched in {self.seconds / 60:.1f} min."
            )
        c = self.chosen
        text = (
            f"{head} Smallest that keeps it: **{c.name}** at {c.bpw_honest:.3f} bits per "
            f"weight (scales and kept weights counted): dev exact match {c.dev_em:.3f}, dev "
            f"answer NLL {c.dev_nll.mean:.3f} {c.dev_nll.text()} (95 % interval)."
        )
        if self.heldout is not None:
            fp, ours = self.heldout
            text += (
                f" Scored once on {len(ours.rows)} held-out examples: exact match "
                f"{ours.exact_match:.3f} against the original's {fp.exact_match:.3f}, answer "
                f"NLL {ours.answer_nll:.3f} against {fp.answer_nll:.3f}."
            )
        else:
            text += " The task has no held-out examples, so no held-out score."
        return f"{text} Searched {len(self.points)} candidates in {self.seconds / 60:.1f} min."

    def table(self) -> pd.DataFrame:
        """The frontier: every candidate scored, in increasing bits per weight, then the
        ones not run and why."""
        rows = [
            {
                "variant": p.name,
                "settings": p.recipe.describe(),
                "bits per weight": round(p.bpw_honest, 3),
                "dev exact match": round(p.dev_em, 3),
                "dev answer NLL": round(p.dev_nll.mean, 3),
                "NLL 95 % interval": p.dev_nll.text(),
                "keeps the task": "yes" if p.meets else "no",
                "chosen": "◀" if p is self.chosen else "",
                "seconds": round(p.seconds),
            }
            for p in self.points
        ]
        rows += [
            {"variant": r.name, "settings": r.describe(), "keeps the task": why}
            for r, why in self.skipped
        ]
        frame = pd.DataFrame(rows, columns=list(FRONTIER_COLUMNS))
        return frame.astype(object).fillna("")  # a candidate not run: blanks

    def record(self) -> dict:
        """JSON-ready: the search and its answer (bench/fit.py, `tacq fit --json`)."""
        out = {
            "keep": self.keep,
            "dev_note": self.dev_note,
            "dev_examples": len(self.fp_dev.rows),
            "fp_dev_em": self.fp_dev.exact_match,
            "fp_dev_nll": self.fp_dev.answer_nll,
            "points": [
                {
                    "recipe": p.recipe.key(),
                    "bits": p.recipe.bits,
                    "name": p.name,
                    "bpw_honest": p.bpw_honest,
                    "dev_em": p.dev_em,
                    "dev_nll": p.dev_nll.mean,
                    "dev_nll_low": p.dev_nll.low,
                    "dev_nll_high": p.dev_nll.high,
                    "meets": p.meets,
                    "seconds": p.seconds,
                }
                for p in self.points
            ],
            "skipped": [{"name": r.name, "why": why} for r, why in self.skipped],
            "chosen": self.chosen.name if self.chosen else None,
            "seconds": self.seconds,
        }
        if self.heldout is not None:
            fp, ours = self.heldout
            out["heldout"] = {
                "examples": len(ours.rows),
                "fp_em": fp.exact_match,
                "em": ours.exact_match,
                "fp_nll": fp.answer_nll,
                "nll": ours.answer_nll,
                "em_kept": ours.exact_match / fp.exact_match if fp.exact_match else None,
            }
        return out


def candidates(bits: tuple[int, ...] = FIT_BITS) -> list[Recipe]:
    """The recipes tried, before ordering: the measured preset per bit width, then at 2 and
    3 bits the preset with each of KEPT_SHARES kept, then with scales per WIDE_GROUP inputs.
    A recipe already listed is not listed twice."""
    bits = check_bits(bits)
    out = [Recipe.preset("measured", b) for b in bits]
    low = [b for b in bits if b < 4]
    out += [Recipe.preset("measured", b).changed(ratio=r) for b in low for r in KEPT_SHARES]
    out += [Recipe.preset("measured", b).changed(group_size=WIDE_GROUP) for b in low]
    return list(dict.fromkeys(out))


def planned_bpw(model: nn.Module, recipe: Recipe) -> float:
    """Honest bits per weight a recipe will give, before anything is quantized: its kept
    weights spread over the Linears in proportion to their size (the ranking decides the
    real spread, and may leave a Linear none: then its per-row counts are not stored, so the
    plan is an upper bound by at most 16 bits per output row)."""
    shapes = [tuple(m.weight.shape) for m in quantizable_linears(model).values()]
    kept = [round(recipe.ratio * o * i) for o, i in shapes]
    other = unquantized_params(model)
    return size_report(shapes, kept, recipe.bits, other, recipe.group_size).bpw_honest


def ordered(model: nn.Module, recipes: list[Recipe]) -> list[tuple[Recipe, float]]:
    """(recipe, planned honest BPW), smallest first."""
    return sorted(((r, planned_bpw(model, r)) for r in recipes), key=lambda rb: rb[1])


def with_dev(task: TaskSet, min_dev: int = MIN_DEV) -> tuple[TaskSet, str]:
    """The task with a dev split to choose on, and a sentence saying where it came from.

    With none marked, every DEV_EVERY-th calibration example becomes dev (the rest still
    calibrate). Refused with fewer than min_dev dev examples."""
    if task.dev:
        t, note = task, f"Chosen on the task's {len(task.dev)} dev examples."
    else:
        calib = [e for i, e in enumerate(task.calib) if i % DEV_EVERY != DEV_EVERY - 1]
        dev = [e for i, e in enumerate(task.calib) if i % DEV_EVERY == DEV_EVERY - 1]
        t = replace(task, calib=tuple(calib), dev=tuple(dev))
        note = (
            f"The examples mark no dev split, so every {DEV_EVERY}th calibration example "
            f"({len(dev)}) is used as dev and the other {len(calib)} calibrate."
        )
    if len(t.dev) < min_dev:
        raise TacqError(
            f"Auto-fit chooses on dev examples and needs at least {min_dev} (have "
            f"{len(t.dev)}): mark more rows 'dev', or give more examples"
            + (
                f" (with no dev split, every {DEV_EVERY}th calibration row is dev)."
                if not task.dev
                else "."
            )
        )
    return t, note


def check_keep(keep: object) -> float:
    """The share to keep as a float, or a message (a script may post anything)."""
    try:
        value = float(keep)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value <= 2:  # NaN fails it too
        raise TacqError(
            f"Keep is the share of the original's dev exact match to keep: above 0 and at "
            f"most 2 (got {keep!r}; 0.9 keeps 90 %)."
        )
    return value


def check_bits(bits: object) -> tuple[int, ...]:
    """Bit widths to try as sorted ints among FIT_BITS, or a message."""
    try:
        got = tuple(sorted({int(b) for b in bits}))
    except (TypeError, ValueError):
        got = ()
    if not got or not set(got) <= set(FIT_BITS):
        raise TacqError(f"Auto-fit tries bit widths among {FIT_BITS} (got {bits!r}).")
    return got


def fit(
    study,
    keep: float = 0.9,
    bits: tuple[int, ...] = FIT_BITS,
    max_candidates: int | None = None,
    progress: Progress | None = None,
) -> FitResult:
    """Search the candidates on `study`'s dev split (tacq.study.workflow.Study; with no dev split,
    a Study of the same model on with_dev's task), and score the choice on held-out.

    max_candidates: stop after scoring this many (a quick look; the choice may then be
    missed). Cancel through `progress` (it raises tacq.errors.Cancelled).
    """
    keep, bits = check_keep(keep), check_bits(bits)
    if max_candidates is not None and max_candidates < 1:
        raise TacqError(f"Auto-fit needs at least 1 candidate (got {max_candidates}).")
    t0 = time.perf_counter()
    progress = progress or no_progress
    task, note = with_dev(study.task)
    if task is not study.task:
        study = study.with_data(task, study.data_cfg)
    lm, dev = study.lm, list(task.dev)
    plan = ordered(lm.model, candidates(bits))
    n_run = min(len(plan), max_candidates or len(plan))
    steps = n_run + 2  # the original on dev, the candidates, the choice on held-out
    progress(0.0, "the original model on dev")
    fp_dev, fp_logps = evaluate(
        lm.model, lm.tokenizer, dev, task.style, "original", progress=scaled(progress, 0, 1 / steps)
    )
    result = FitResult(keep, note, fp_dev)
    met_at: int | None = None  # the lowest bit width that met the target
    for recipe, _ in plan:
        if met_at is not None and recipe.bits > met_at:
            result.skipped.append((recipe, f"not run: {met_at} bits already keep the task"))
            continue
        if len(result.points) == n_run:
            result.skipped.append((recipe, f"not run: the search stops at {n_run} candidates"))
            continue
        i = len(result.points) + 1
        part = scaled(progress, i / steps, (i + 1) / steps)
        t = time.perf_counter()
        part(0.0, f"candidate {i} of {n_run}: {recipe.name}")
        if recipe.ratio and study.stats is None:
            study.collect(scaled(part, 0.0, 0.3))
        v = study.quantize(recipe, scaled(part, 0.3, 0.85))
        r, _ = evaluate(
            v.model, lm.tokenizer, dev, task.style, v.name, fp_logprobs=fp_logps,
            progress=scaled(part, 0.85, 1.0),
        )  # fmt: skip
        point = FitPoint(
            recipe, v.name, v.size.bpw_honest, intervals(r)[0], r.exact_match,
            r.exact_match >= result.target_em, time.perf_counter() - t,
        )  # fmt: skip
        result.points.append(point)
        if point.meets and (result.chosen is None or point.bpw_honest < result.chosen.bpw_honest):
            result.chosen, result.variant = point, v
            met_at = recipe.bits if met_at is None else min(met_at, recipe.bits)
        del v
    if result.variant is not None and task.heldout:
        held = list(task.heldout)
        last = scaled(progress, (steps - 1) / steps, 1.0)
        fp_held, fp_held_logps = evaluate(
            lm.model, lm.tokenizer, held, task.style, "original", progress=scaled(last, 0, 0.5)
        )
        ours, _ = evaluate(
            result.variant.model, lm.tokenizer, held, task.style, result.variant.name,
            fp_logprobs=fp_held_logps, progress=scaled(last, 0.5, 1.0),
        )  # fmt: skip
        result.heldout = (fp_held, ours)
    result.seconds = time.perf_counter() - t0
    progress(1.0, "auto-fit done")
    return result
