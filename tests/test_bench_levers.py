"""bench/levers.py: TaCQ's kept weights put back on a peer's rounding (here the fake hqq)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

from tacq.circuit.select import Selection
from tacq.peers.registry import PEERS
from tacq.quant.recipe import Recipe
from tacq.study.workflow import Study

BENCH = Path(__file__).resolve().parent.parent / "bench"
FAKE = Path(__file__).parent / "fixtures" / "fake_peers"


@pytest.fixture()
def levers(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.syspath_prepend(str(FAKE))
    monkeypatch.delitem(sys.modules, "levers", raising=False)
    import levers

    return levers


def test_kept_weights_on_a_peers_rounding(levers, tiny_lm, tiny_task):
    lever = levers.Lever(ratio=0.02, group_size=32, peer="hqq")
    study = Study(tiny_lm, tiny_task)
    study.collect()
    ranking = study.ranking(Selection("tacq", 2, lever.ratio, lever.group_size))
    row, model, alone = levers.on_peer_rounding(
        tiny_lm, study, ranking, 2, lever, time.perf_counter()
    )
    masks = ranking.masks(lever.ratio)
    peer = PEERS["hqq"][2](tiny_lm.model, ranking.names, 2, 32).weights
    for name in ranking.names:
        got = model.get_submodule(name).weight
        orig = tiny_lm.model.get_submodule(name).weight
        m = masks[name]
        assert torch.equal(got[m], orig[m])  # the circuit at full precision
        assert torch.equal(got[~m], peer[name][~m])  # the rest exactly as the peer rounded it
        assert torch.equal(alone.get_submodule(name).weight, peer[name])  # same run, no kept
    assert sum(int(m.sum()) for m in masks.values()) > 0
    plain = 2 + 8 * (2 + 2) / 32  # codes, fp16 scale and zero per 32 weights
    assert row["bpw_honest"] > plain
    assert row["peer_bpw_honest"] == pytest.approx(plain)
    assert row["peer"] == "hqq 0.0.0+fake"


def test_lever_names_survive_the_comma_list(levers):
    """--levers is a comma list: a name with a comma could never be asked for."""
    assert all("," not in name for name in levers.LEVERS)


@pytest.mark.parametrize("steps,epochs", [(0, 0), (5, 0), (0, 2)])
@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_a_rotated_lever_is_the_products_rotated_variant(
    levers, tiny_lm, tiny_task, steps, epochs, monkeypatch
):
    """The levers' rotated run (and with checked rounding, or distilled scales) is
    Study.quantize's, weight for weight."""
    import functools

    import tacq.circuit.gradients
    from tacq.formats.packed import packed_modules
    from tests.test_distill import short_generic_text

    # batches of 4: the 8 tiny examples leave one batch to hold aside for the check
    small = functools.partial(tacq.circuit.gradients.GradientConfig, batch_size=4)
    monkeypatch.setattr(tacq.circuit.gradients, "GradientConfig", small)
    lever = levers.Lever(
        ratio=0.02, group_size=32, damp=0.1, rotation="hadamard", rounding_steps=steps,
        distill_epochs=epochs,
    )  # fmt: skip
    short_generic_text(monkeypatch)
    _, model, _ = levers.run_lever(tiny_lm, tiny_task, 2, lever)
    study = Study(tiny_lm, tiny_task, grad_cfg=small())
    study.collect()
    tuned = {"rounding_steps": steps, "rounding_check": bool(steps), "distill_epochs": epochs}
    v = study.quantize(
        Recipe.of(Selection("tacq", 2, 0.02, 32), damp=0.1, rotation="hadamard", **tuned)
    )
    assert v.spec.rounding_check == bool(steps) and v.spec.distill_epochs == epochs
    mods = packed_modules(v.model)
    assert mods and all(m.rotation == ("hadamard", m.rotation[1]) for m in mods.values())
    for name, mod in mods.items():
        got = model.get_submodule(name).weight
        torch.testing.assert_close(got, mod.dequantize(), atol=1e-6, rtol=0)
        assert not torch.equal(got, tiny_lm.model.get_submodule(name).weight)
    with pytest.raises(ValueError, match="rotated lever"):
        levers.run_lever(tiny_lm, tiny_task, 2, levers.Lever(rotation="hadamard", generic=True))
