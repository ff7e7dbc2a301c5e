"""The causal test damages exactly the named weights, restores them, and measures truly."""

from __future__ import annotations

import copy

import pytest
import torch

from tacq.circuit.causal import (
    CausalConfig,
    RowGrids,
    causal_test,
    damaged,
    measure,
    random_global,
    random_matched,
)
from tacq.circuit.select import Selection
from tacq.data.reading import load_task
from tacq.data.tasks import generic_text
from tacq.errors import Cancelled, TacqError
from tacq.formats.grid import GPTQConfig, find_params, quantize_to_grid
from tacq.models import quantizable_linears
from tacq.study.workflow import Study

FAST = CausalConfig(seeds=2, task_examples=4, control_examples=4, ppl_chunks=1)


def _weights(model):
    return {n: m.weight.detach().clone() for n, m in quantizable_linears(model).items()}


def _shapes(model):
    return {n: tuple(m.weight.shape) for n, m in quantizable_linears(model).items()}


def test_random_controls_match_the_circuit_size(tiny_llama):
    shapes = _shapes(tiny_llama)
    counts = {n: i * 3 for i, n in enumerate(shapes)}
    a, b = random_matched(counts, shapes, 0), random_matched(counts, shapes, 1)
    assert {n: int(m.sum()) for n, m in a.items()} == counts
    assert any(not torch.equal(a[n], b[n]) for n in shapes)
    g = random_global(500, shapes, 0)
    assert sum(int(m.sum()) for m in g.values()) == 500
    assert sum(1 for m in g.values() if m.any()) > 1  # spread over the model
    assert all(g[n].shape == s for n, s in shapes.items())


@pytest.mark.parametrize("damage", ["zero", "round"])
def test_damage_touches_only_the_mask_and_is_undone(tiny_llama, damage):
    linears = quantizable_linears(tiny_llama)
    before = _weights(tiny_llama)
    name = next(iter(linears))
    mask = torch.zeros_like(before[name], dtype=torch.bool)
    mask[1, :5] = True
    mask[3, 7] = True
    cfg = GPTQConfig(bits=2)
    with damaged(linears, {name: mask}, damage, RowGrids(linears, cfg)) as n:
        W = linears[name].weight.detach()
        assert n == 6
        assert torch.equal(W[~mask], before[name][~mask])
        if damage == "zero":
            assert torch.all(W[mask] == 0)
        else:  # each damaged weight on its row's 2-bit grid, fitted on the original row
            for r in (1, 3):
                s, z = find_params(before[name][r : r + 1], None, cfg)
                _, want = quantize_to_grid(before[name][r], s, z, cfg.maxq)
                assert torch.allclose(W[r][mask[r]], want[mask[r]])
                assert not torch.equal(W[r][mask[r]], before[name][r][mask[r]])
    after = _weights(tiny_llama)
    assert all(torch.equal(before[n], after[n]) for n in before)


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_causal_table_measures_what_it_says(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    study.collect()
    sel = Selection("tacq", bits=2, ratio=0.01)
    before = _weights(tiny_lm.model)
    cfg = CausalConfig(damage="zero", seeds=2, task_examples=4, control_examples=4, ppl_chunks=1)
    res = causal_test(study, sel, "capitals", cfg)
    t = res.table.set_index("weights damaged")
    N = sum(w.numel() for w in before.values())
    assert res.n_damaged == int(0.01 * N)
    assert list(t["damaged"]) == [0] + [res.n_damaged] * 4
    assert t.iloc[0]["task NLL change"] == 0 and t.iloc[0]["control NLL change"] == 0
    assert "2 seeds" in t.loc["random, same count per Linear", "spread (task NLL change)"]
    # the model is whole again
    assert all(torch.equal(w, _weights(tiny_lm.model)[n]) for n, w in before.items())
    # the circuit row equals a copy of the model with those weights zeroed by hand
    model = copy.deepcopy(tiny_lm.model)
    masks = study.ranking(sel).masks(sel.ratio)
    with torch.no_grad():
        for n, m in quantizable_linears(model).items():
            m.weight[masks[n]] = 0
    want = measure(model, tiny_lm.tokenizer, tiny_task, load_task("capitals"), cfg, generic_text())
    row = t.loc["circuit (tacq)"]
    assert row["task NLL"] == pytest.approx(want.task_nll, rel=1e-5)
    assert row["control NLL"] == pytest.approx(want.control_nll, rel=1e-5)
    assert row["perplexity"] == pytest.approx(want.ppl, rel=1e-5)
    assert res.summary().startswith(f"Zeroing these 1.00% of the weights ({res.n_damaged:,})")


def test_cancel_in_the_middle_restores_every_weight(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    study.collect()
    before = _weights(tiny_lm.model)
    calls = []

    def progress(frac, label):
        calls.append(label)
        if label.startswith("measuring: random"):
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        causal_test(study, Selection("tacq", bits=2, ratio=0.01), "capitals", FAST, progress)
    assert any(c.startswith("measuring: circuit") for c in calls)
    assert all(torch.equal(w, _weights(tiny_lm.model)[n]) for n, w in before.items())


def test_bad_requests_say_what_is_wrong(tiny_lm, tiny_task):
    with pytest.raises(TacqError, match="Damage must be"):
        CausalConfig(damage="burn")
    study = Study(tiny_lm, tiny_task)
    with pytest.raises(TacqError, match="ratio above 0"):
        causal_test(study, Selection("magnitude", bits=2, ratio=0.0), "capitals", FAST)
