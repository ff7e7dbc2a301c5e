"""Auto-fit: candidates in bits order, pruning by bit width, the dev rule, the choice."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from tacq.data.tasks import Example, TaskSet
from tacq.errors import Cancelled, TacqError
from tacq.eval.evaluate import EvalResult
from tacq.models import quantizable_linears
from tacq.quant.recipe import Recipe
from tacq.study import autofit
from tacq.study.autofit import candidates, fit, ordered, planned_bpw, with_dev
from tacq.study.workflow import Study


def _task(n_calib: int, n_dev: int, n_held: int = 8) -> TaskSet:
    ex = [Example(f"w{i} ->", f" v{i}") for i in range(n_calib + n_dev + n_held)]
    return TaskSet(
        "t",
        tuple(ex[:n_calib]),
        tuple(ex[n_calib + n_dev :]),
        dev=tuple(ex[n_calib : n_calib + n_dev]),
    )


def test_candidates_are_the_listed_recipes_once_each():
    got = candidates()
    measured = [Recipe.preset("measured", b) for b in (2, 3, 4)]
    assert all(m in got for m in measured)
    assert len(got) == len(set(got)) == 9  # the 2-bit preset keeps 0.20 %, the 3-bit 0.35 %
    assert {r.ratio for r in got if r.bits == 2} == {0.002, 0.0035, 0.005}
    assert {r.group_size for r in got} == {None, 128}
    assert not [r for r in got if r.bits == 4 and r != measured[2]]
    assert {r.bits for r in candidates((2,))} == {2}
    with pytest.raises(TacqError, match="among"):
        candidates((5,))


def test_order_is_by_planned_bits_and_the_plan_bounds_what_quantizing_gives(tiny_lm, tiny_task):
    plan = ordered(tiny_lm.model, candidates())
    bpws = [b for _, b in plan]
    assert bpws == sorted(bpws) and bpws[0] > 2
    assert [r.bits for r, _ in plan] == sorted(r.bits for r, _ in plan)
    study = Study(tiny_lm, tiny_task)
    study.collect()
    recipe = Recipe(bits=2, ratio=0.01)
    v = study.quantize(recipe)
    # the plan counts a kept count for every row; the ranking may leave a Linear none
    shapes = [m.weight.shape for m in quantizable_linears(tiny_lm.model).values()]
    row_counts = 8 * 2 * sum(o for o, _ in shapes) / sum(o * i for o, i in shapes)
    gap = planned_bpw(tiny_lm.model, recipe) - v.size.bpw_honest
    assert 0 <= gap <= row_counts


def test_dev_from_calibration_when_none_is_marked():
    t, note = with_dev(_task(80, 0))
    assert len(t.dev) == 20 and len(t.calib) == 60 and "every 4th" in note
    assert t.dev[0].prompt == "w3 ->" and not set(t.dev) & set(t.calib)
    marked, note = with_dev(_task(20, 16))
    assert len(marked.dev) == 16 and "16 dev" in note
    with pytest.raises(TacqError, match="at least 16.*have 15"):
        with_dev(_task(60, 0))
    with pytest.raises(TacqError, match="have 4"):
        with_dev(_task(20, 4))


def _fake_study(tiny_lm, task, em_by_bits: dict[int, float]):
    """A Study stand-in whose variants score em_by_bits on dev: the search logic alone."""
    made = []

    def quantize(recipe, progress=None):
        made.append(recipe)
        size = SimpleNamespace(bpw_honest=planned_bpw(tiny_lm.model, recipe))
        return SimpleNamespace(name=recipe.name, model=recipe, size=size)

    study = SimpleNamespace(
        task=task, lm=tiny_lm, stats=object(), quantize=quantize, data_cfg=None, made=made
    )

    def evaluate(model, tok, examples, style, name, fp_logprobs=None, progress=None):
        em = 0.5 if name == "original" else em_by_bits[model.bits]
        rows = [
            {"prompt": e.prompt, "nll": 1.0, "correct": i < em * len(examples)}
            for i, e in enumerate(examples)
        ]
        return EvalResult(name, 1.0, em, None, rows), []

    return study, evaluate


def test_search_stops_at_the_lowest_bit_width_that_keeps_the_task(tiny_lm, monkeypatch):
    study, evaluate = _fake_study(tiny_lm, _task(40, 16), {2: 0.25, 3: 0.5, 4: 0.5})
    monkeypatch.setattr(autofit, "evaluate", evaluate)
    r = fit(study, keep=0.9)
    assert [p.recipe.bits for p in r.points] == [2] * 4 + [3] * 4  # 4 bits never run
    assert r.chosen is r.points[4] and r.chosen.meets and not r.points[3].meets
    assert r.chosen.bpw_honest == min(p.bpw_honest for p in r.points if p.meets)
    assert [why for _, why in r.skipped] == ["not run: 3 bits already keep the task"]
    assert r.variant.model == r.chosen.recipe
    fp, ours = r.heldout
    assert len(ours.rows) == 8 and fp.name == "original"
    table = r.table()
    assert table["chosen"].tolist().count("◀") == 1 and len(table) == 9
    assert "**" in r.summary() and r.record()["chosen"] == r.chosen.name


def test_nothing_qualifies_says_so_and_shows_every_point(tiny_lm, monkeypatch):
    study, evaluate = _fake_study(tiny_lm, _task(40, 16), {2: 0.0, 3: 0.25, 4: 0.375})
    monkeypatch.setattr(autofit, "evaluate", evaluate)
    r = fit(study, keep=0.9)
    assert r.chosen is None and r.variant is None and r.heldout is None
    assert len(r.points) == 9 and "No candidate" in r.summary() and "0.375" in r.summary()


def test_a_capped_search_says_what_it_did_not_run(tiny_lm, monkeypatch):
    study, evaluate = _fake_study(tiny_lm, _task(40, 16), {2: 0.0, 3: 0.5, 4: 0.5})
    monkeypatch.setattr(autofit, "evaluate", evaluate)
    r = fit(study, keep=0.9, max_candidates=2)
    assert len(r.points) == 2 and r.chosen is None
    assert sum("stops at 2" in why for _, why in r.skipped) == 7


def test_bad_keep_and_cancel(tiny_lm, monkeypatch):
    study, evaluate = _fake_study(tiny_lm, _task(40, 16), {2: 0.0, 3: 0.5, 4: 0.5})
    monkeypatch.setattr(autofit, "evaluate", evaluate)
    for keep in (0, -1, 3, float("nan"), "x", None):
        with pytest.raises(TacqError, match="Keep"):
            fit(study, keep=keep)
    for bits in ((), ("x",), (2, 8), None):
        with pytest.raises(TacqError, match="among"):
            fit(study, bits=bits)

    def stop(frac, label):
        if "candidate 2" in label:
            raise Cancelled("stopped")

    with pytest.raises(Cancelled):
        fit(study, progress=stop)
    assert len(study.made) == 1


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_fit_on_the_tiny_model_end_to_end(tiny_lm, tiny_task):
    words = [Example(f"{i} ->", f" {i + 1}") for i in range(16)]
    task = replace(tiny_task, dev=tuple(words))
    r = fit(Study(tiny_lm, task), keep=0.5, bits=(2,), max_candidates=2)
    assert len(r.points) == 2 and r.fp_dev.exact_match == 0.0
    assert r.chosen is r.points[0]  # 0 of the original's 0: the smallest keeps it
    assert r.variant.name == r.chosen.name and r.variant.size.bpw_honest == r.chosen.bpw_honest
    assert r.heldout[1].name == r.chosen.name and len(r.heldout[1].rows) == len(task.heldout)
    assert r.chosen.dev_nll.low <= r.chosen.dev_nll.mean <= r.chosen.dev_nll.high


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--keep", "0"], "above 0"),
        (["--bits", "2,5"], "among (2, 3, 4)"),
        (["--bits", "two"], "among (2, 3, 4)"),
        (["--max-candidates", "0"], "at least one"),
    ],
)
def test_cli_fit_refuses_bad_options_before_loading(argv, said, capsys):
    from tacq.cli.main import main

    assert main(["fit", *argv]) == 1
    out = capsys.readouterr()
    assert said in out.err and "loaded" not in out.out
