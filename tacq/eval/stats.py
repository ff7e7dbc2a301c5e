"""95 % bootstrap intervals and paired comparisons of per-example held-out results.

Why: a mean over a few dozen examples cannot tell close methods apart (2-bit NLL moved
by up to 0.7 with float summation order alone). An interval says what a held-out set
can decide; a paired comparison (both methods on the same examples) decides far more
than two separate intervals, because most of the per-example spread is shared.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from tacq.errors import TacqError
from tacq.eval.evaluate import EvalResult

LEVEL = 0.95
RESAMPLES = 2000
PAIRED_COLUMNS = [
    "A",
    "B",
    "NLL A - B",
    "NLL 95 % interval",
    "A better on",
    "exact match A - B",
    "EM 95 % interval",
    "decided",
    "examples",
]


@dataclass(frozen=True)
class Interval:
    """A mean and its percentile-bootstrap interval."""

    mean: float
    low: float
    high: float

    def excludes(self, value: float = 0.0) -> bool:
        return not self.low <= value <= self.high

    def text(self, digits: int = 3) -> str:
        return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap(values: Sequence[float], resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Mean of `values` with its 95 % percentile-bootstrap interval (fixed seed: repeatable)."""
    x = torch.as_tensor(list(values), dtype=torch.float64)
    if x.numel() == 0:
        raise TacqError("No values to summarise.")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(x), (resamples, len(x)), generator=g)
    means = x[idx].mean(1)
    tail = (1 - LEVEL) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return Interval(float(x.mean()), float(low), float(high))


def per_example(result: EvalResult) -> tuple[list[float], list[float]]:
    """(answer NLL, 1.0 if right else 0.0) per held-out example."""
    return [r["nll"] for r in result.rows], [float(r["correct"]) for r in result.rows]


def intervals(result: EvalResult) -> tuple[Interval, Interval]:
    """(answer NLL, exact match) of one result, each with its 95 % interval."""
    nll, em = per_example(result)
    return bootstrap(nll), bootstrap(em)


@dataclass(frozen=True)
class Paired:
    """A minus B on the same examples: negative NLL difference means A is better."""

    a: str
    b: str
    nll: Interval  # mean per-example NLL difference A - B
    em: Interval  # mean per-example exact-match difference A - B
    a_better: float  # share of examples where A's NLL is lower (ties count half)
    examples: int

    @property
    def better(self) -> str | None:
        """The name of the lower-NLL side when the interval excludes zero, else None."""
        if not self.nll.excludes(0):
            return None
        return self.a if self.nll.mean < 0 else self.b


def paired(a: EvalResult, b: EvalResult) -> Paired:
    """Compare two results example by example; they must be on the same prompts."""
    return paired_values(a.name, b.name, *per_example(a), *per_example(b), same_prompts(a, b))


def same_prompts(a: EvalResult, b: EvalResult) -> bool:
    return [r["prompt"] for r in a.rows] == [r["prompt"] for r in b.rows]


def paired_values(
    a: str,
    b: str,
    nll_a: Sequence[float],
    em_a: Sequence[float],
    nll_b: Sequence[float],
    em_b: Sequence[float],
    aligned: bool = True,
) -> Paired:
    """Paired comparison from per-example lists (what the benches store)."""
    if not aligned or len(nll_a) != len(nll_b):
        raise TacqError(f"{a} and {b} were not evaluated on the same examples.")
    d_nll = [x - y for x, y in zip(nll_a, nll_b)]
    d_em = [x - y for x, y in zip(em_a, em_b)]
    wins = sum(1.0 if d < 0 else 0.5 if d == 0 else 0.0 for d in d_nll) / len(d_nll)
    return Paired(a, b, bootstrap(d_nll), bootstrap(d_em), wins, len(d_nll))


def paired_table(
    results: Sequence[EvalResult], pairs: Sequence[tuple[str, str]] | None = None
) -> pd.DataFrame:
    """One row per pair (default: every pair of variants; a single variant against the
    original, results[0])."""
    by_name = {r.name: r for r in results}
    if pairs is None:
        names = [r.name for r in results[1:]]
        pairs = list(itertools.combinations(names, 2)) or [(n, results[0].name) for n in names]
    rows = [paired_row(paired(by_name[a], by_name[b])) for a, b in pairs]
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def paired_row(p: Paired) -> dict:
    decided = f"{p.better} better" if p.better else "not decided by these examples"
    return {
        "A": p.a,
        "B": p.b,
        "NLL A - B": round(p.nll.mean, 4),
        "NLL 95 % interval": p.nll.text(),
        "A better on": f"{p.a_better:.0%}",
        "exact match A - B": round(p.em.mean, 3),
        "EM 95 % interval": p.em.text(),
        "decided": decided,
        "examples": p.examples,
    }
