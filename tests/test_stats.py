"""Bootstrap intervals and paired comparisons against what they must give."""

from __future__ import annotations

import math
import random

import pytest

from tacq.errors import TacqError
from tacq.eval.evaluate import EvalResult
from tacq.eval.stats import bootstrap, paired, paired_table
from tacq.study.tables import RESULT_COLUMNS, results_table


def _result(name: str, nlls: list[float], right: list[bool], prompts=None) -> EvalResult:
    prompts = prompts or [f"p{i}" for i in range(len(nlls))]
    rows = [
        {"prompt": p, "answer": "a", "prediction": "a", "correct": c, "nll": n}
        for p, n, c in zip(prompts, nlls, right)
    ]
    return EvalResult(name, sum(nlls) / len(nlls), sum(right) / len(right), None, rows)


def test_interval_matches_the_normal_approximation_on_many_values():
    rng = random.Random(0)
    x = [rng.gauss(3.0, 2.0) for _ in range(400)]
    mean = sum(x) / len(x)
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (len(x) - 1))
    half = 1.96 * sd / math.sqrt(len(x))
    iv = bootstrap(x)
    assert iv.mean == pytest.approx(mean)
    assert iv.low == pytest.approx(mean - half, abs=0.15 * half)
    assert iv.high == pytest.approx(mean + half, abs=0.15 * half)
    assert bootstrap(x) == iv  # fixed seed: the same interval every time


def test_constant_values_have_a_point_interval():
    iv = bootstrap([2.5] * 10)
    assert (iv.low, iv.mean, iv.high) == (2.5, 2.5, 2.5)
    assert iv.excludes(0) and not iv.excludes(2.5)
    with pytest.raises(TacqError):
        bootstrap([])


def test_paired_decides_a_shift_that_separate_intervals_cannot():
    rng = random.Random(1)
    base = [rng.uniform(0, 10) for _ in range(40)]  # wide spread shared by both methods
    a = _result("a", [v - 0.3 for v in base], [True] * 40)
    b = _result("b", base, [False] * 20 + [True] * 20)
    ia, ib = bootstrap(base), bootstrap([v - 0.3 for v in base])
    assert ia.low < ib.high  # the separate intervals overlap ...
    p = paired(a, b)
    assert p.nll.mean == pytest.approx(-0.3) and p.nll.excludes(0)  # ... the pairs decide
    assert p.a_better == 1.0 and p.em.mean == pytest.approx(0.5)
    row = paired_table([a, a, b], [("a", "b")]).iloc[0]
    assert row["decided"] == "a better" and row["A better on"] == "100%"
    alone = paired_table([b, a])  # one variant: compared with the original
    assert alone[["A", "B"]].values.tolist() == [["a", "b"]]


def test_paired_refuses_different_examples_and_ties_count_half():
    a = _result("a", [1.0, 2.0], [True, True])
    with pytest.raises(TacqError, match="same examples"):
        paired(a, _result("b", [1.0, 2.0], [True, True], ["x", "y"]))
    same = paired(a, _result("c", [1.0, 2.0], [True, False]))
    assert same.a_better == 0.5 and not same.nll.excludes(0)


def test_results_table_shows_intervals():
    r = _result("v", [1.0, 3.0, 2.0, 2.0], [True, False, True, True])
    table = results_table([r])
    assert list(table.columns) == RESULT_COLUMNS
    low, high = (float(x) for x in table.iloc[0]["NLL 95 % interval"].strip("[]").split(","))
    assert low < 2.0 < high and 1.0 <= low and high <= 3.0
