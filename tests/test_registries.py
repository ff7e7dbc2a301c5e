"""One place per fact: the metric registry, module kinds, and the shared table builders."""

from __future__ import annotations

import pytest

from tacq.circuit.saliency import METRICS, get_metric, metrics_in
from tacq.circuit.select import Selection
from tacq.errors import TacqError
from tacq.eval.evaluate import EvalResult
from tacq.models import MODULE_KINDS, PROJ_NAMES, SEQUENTIAL_GROUPS
from tacq.study.tables import BROKE_COLUMNS, RESULT_COLUMNS, results_table, what_broke


def test_metric_needs_derive_from_the_inputs_each_metric_reads():
    assert {m.name for m in METRICS.values() if m.needs_quant} == {
        "tacq",
        "qal",
        "spqr",
        "squeezellm",
    }
    assert {m.name for m in METRICS.values() if m.needs_extra} == {
        "fisher",
        "signed_grad",
        "squeezellm",
    }
    assert [m.name for m in METRICS.values() if not m.needs_grads] == [
        "magnitude",
        "spqr",
        "random",
    ]
    assert metrics_in("paper") == ["tacq", "qal", "msg"]
    with pytest.raises(TacqError, match="choose one of tacq, qal"):
        get_metric("tacq2")


def test_selection_ranking_key_ignores_bits_unless_dw_is_used():
    assert Selection("msg", 2).ranking_key == Selection("msg", 4, 0.01).ranking_key
    assert Selection("tacq", 2).ranking_key != Selection("tacq", 3).ranking_key
    assert Selection("tacq", 2, group_size=128).ranking_key == ("tacq", 2, 128)  # dW differs
    assert Selection("msg", 2, group_size=128).ranking_key == Selection("msg").ranking_key
    with pytest.raises(TacqError, match="Group size must be one of 32, 64"):
        Selection(group_size=100)


def test_module_kinds_and_groups_cover_each_projection_once():
    grouped = [k for g in SEQUENTIAL_GROUPS for k in g]
    assert sorted(grouped) == sorted(MODULE_KINDS) and len(grouped) == len(set(grouped))
    assert PROJ_NAMES == tuple(f"{k}_proj" for k in MODULE_KINDS)


def _result(name: str, correct: list[bool], kl: float | None) -> EvalResult:
    rows = [
        {
            "prompt": f"x\nw{i} ->",
            "answer": f" a{i}",
            "prediction": "a" if c else "b",
            "correct": c,
            "nll": 1.23456,
        }
        for i, c in enumerate(correct)
    ]
    return EvalResult(name, 1.23456, sum(correct) / len(correct), kl, rows)


def test_results_table_and_what_broke():
    fp = _result("original", [True, True, False], None)
    q = _result("tacq-2bit-0.35%", [True, False, True], 0.123456)
    table = results_table([fp, q])
    assert list(table.columns) == RESULT_COLUMNS
    row = ["tacq-2bit-0.35%", 1.2346, "[1.235, 1.235]", 0.667, "[0.000, 1.000]", 0.1235, 3]
    assert table.iloc[1].tolist() == row
    assert table["KL to original"].isna().tolist() == [True, False]  # no KL of the original
    broke = what_broke([fp, q])
    assert list(broke.columns) == BROKE_COLUMNS
    assert broke.to_dict("records") == [
        {
            "variant": "tacq-2bit-0.35%",
            "prompt (last line)": "w1 ->",
            "answer": "a1",
            "original says": "a",
            "variant says": "b",
        }
    ]


def test_variant_lists_get_one_update_each():
    """A dict shared by several outputs reaches only the first (the chat columns went blank)."""
    from app.common import variant_choices

    ups = variant_choices(["a", "b", "c"], 4)
    assert [u["value"] for u in ups] == ["c", "c", "c", "b"]
    assert len({id(u) for u in ups}) == 4 and all(u["choices"] == ["a", "b", "c"] for u in ups)
    ups = variant_choices(["t3", "t2", "g2"], 3, "t3", "t2")
    assert [u["value"] for u in ups] == ["t3", "t3", "t2"]
