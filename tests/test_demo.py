"""The demo's settings come from measurements, its times from this machine, and its
gallery shows each model's answers marked right or wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tacq.eval.evaluate import EvalResult
from tacq.study.tables import gallery, gallery_right, model_label
from tacq.study.workflow import Study

ROOT = Path(__file__).resolve().parent.parent


def test_demo_defaults_are_the_measured_pick():
    """DEMO_TASK and DEMO_RECIPE are what bench/demo_pick.py chose on the dev splits."""
    from tacq.study.demo import DEMO_RECIPE, DEMO_TASK, demo_recipe

    pick = json.loads((ROOT / "bench" / "results" / "demo_pick.json").read_text())["pick"]
    assert (DEMO_TASK, DEMO_RECIPE) == (pick["task"], pick["recipe"])
    assert pick["bpw_honest"] <= 2.3 and demo_recipe(2).ratio == pick["ratio"]


def test_quick_demo_makes_both_gptq_baselines_only_if_they_fit_its_minutes():
    """bench/demo_time.py timed the quick demo with both GPTQ baselines on empty caches:
    over QUICK_LIMIT_S, the quick demo makes g128 alone (what practitioners run)."""
    from tacq.study.demo import DEMO_RECIPE, GPTQ_BASELINES, QUICK_GPTQ, QUICK_LIMIT_S, demo_recipes

    timed = json.loads((ROOT / "bench" / "results" / "demo_time.json").read_text())
    both = [r for r in timed["runs"] if r["attempt"].startswith("both GPTQ baselines")]
    assert len(both) == 1 and both[0]["recipe"] == DEMO_RECIPE, "rerun bench/demo_time.py"
    assert both[0]["variants"] == [r.name for r in demo_recipes(True, GPTQ_BASELINES)]
    fits = both[0]["actual_s"] <= QUICK_LIMIT_S == timed["quick_limit_s"]
    assert QUICK_GPTQ == (GPTQ_BASELINES if fits else GPTQ_BASELINES[1:])
    assert [r.group_size for r in GPTQ_BASELINES] == [None, 128]


def test_plain_gptq_is_free_only_where_it_is_tacqs_reference():
    """bench/demo_time.py: per-channel GPTQ took 0.1 s after the rotated, damped TaCQ
    2-bit (its ranking's dW comes from plain GPTQ), g128 a pass of its own (126 s)."""
    from tacq.quant.recipe import Recipe
    from tacq.study.demo import shares_reference

    plain, g128 = Recipe(bits=2, ratio=0.0), Recipe(bits=2, ratio=0.0, group_size=128)
    assert shares_reference(Recipe.from_key("tacq_p0.5", 2), plain)
    assert not shares_reference(Recipe.from_key("tacq_p0.5", 2), g128)
    assert not shares_reference(Recipe.from_key("tacq_p0.5", 3), plain)  # another bit width
    assert shares_reference(Recipe.preset("measured", 2), plain)  # its ranking's reference
    assert not shares_reference(Recipe(bits=2, metric="magnitude", ratio=0.002), plain)  # no dW


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_next_demo_expects_the_last_measured_times(tiny_lm, tiny_task):
    from tacq.study.demo import plan_demo, run_demo

    runs = []
    for _ in range(2):  # empty caches, then filled ones: each kind keeps its own times
        runs.append(plan_demo(Study(tiny_lm, tiny_task), quick=True))
        assert runs[-1].times_key.endswith("cold" if len(runs) == 1 else "warm")
        for _ in run_demo(runs[-1]):
            pass
    again = plan_demo(Study(tiny_lm, tiny_task), quick=True)
    assert [s.expected_s for s in again.stages] == [round(s.elapsed_s, 1) for s in runs[1].stages]


def test_first_guess_scales_with_the_speed_probe(tiny_lm, tiny_task, monkeypatch):
    import tacq.study.demo as demo

    study = Study(tiny_lm, tiny_task)
    monkeypatch.setattr(demo, "speed_probe", lambda: demo.REF_PROBE_S)
    base = demo.first_guess(study)
    monkeypatch.setattr(demo, "speed_probe", lambda: 3 * demo.REF_PROBE_S)
    slow = demo.first_guess(study)
    assert slow == pytest.approx({k: 3 * v for k, v in base.items()})
    n_weights = 2 * (64 * 64 * 2 + 32 * 64 * 2 + 96 * 64 * 3)  # the tiny model's Linears
    want = demo.REF_STAGE_S["TaCQ, cold caches"] * n_weights / demo.REF_WEIGHTS
    assert base["TaCQ, cold caches"] == pytest.approx(want)


def _result(name: str, preds: list[str], answers: list[str]) -> EvalResult:
    rows = [
        {
            "prompt": f"shot\nq{i} ->",
            "answer": f" {a}",
            "prediction": p,
            "correct": p == a,
            "nll": 1.0,
        }
        for i, (p, a) in enumerate(zip(preds, answers))
    ]
    return EvalResult(name, 1.0, sum(r["correct"] for r in rows) / len(rows), None, rows)


def test_gallery_marks_each_answer_and_says_what_each_model_is():
    answers = ["a", "b", "c"]
    results = [
        _result("original", ["a", "b", "c"], answers),
        _result("tacq-2bit-0.35%", ["a", "x", "c"], answers),
        _result("gptq-2bit", ["", "y", "z"], answers),
    ]
    g = gallery(results, {"tacq-2bit-0.35%": 2.194, "gptq-2bit": 2.031}, n=2)
    assert list(g.columns) == [
        "prompt (last line)",
        "answer",
        "original",
        "tacq-2bit-0.35% · 2.19 BPW",
        "gptq-2bit (per channel) · 2.03 BPW",
    ]
    assert g["prompt (last line)"].tolist() == ["q0 ->", "q1 ->"]
    assert g.iloc[:, 3].tolist() == ["✓ a", "✗ x"]
    assert g.iloc[:, 4].tolist() == ["✗ (nothing)", "✗ y"]
    assert gallery_right(results, n=2) == {"original": 2, "tacq-2bit-0.35%": 1, "gptq-2bit": 0}
    assert model_label("gptq-2bit-g128") == "gptq-2bit-g128"
