"""A rotated variant end to end: made by Study.quantize, packed, exported and loaded back
with the same weights and logits; what it does not combine with is refused up front."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from tacq.circuit.select import Selection
from tacq.errors import TacqError
from tacq.formats.export import describe_packed, load_quantized, save_packed
from tacq.formats.packed import packed_modules
from tacq.models import quantizable_linears
from tacq.quant.recipe import Recipe
from tacq.quant.variant import load_variant
from tacq.study.workflow import Study
from tests.tiny import fp16_exact


@pytest.fixture
def study(tiny_lm, tiny_task):
    fp16_exact(tiny_lm.model)
    s = Study(tiny_lm, tiny_task)
    s.collect()
    return s


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_rotated_variant_round_trips_bit_identically(study, tiny_lm, tmp_path):
    sel = Selection("tacq", bits=3, ratio=0.02)
    v = study.quantize(Recipe.of(sel, rotation="hadamard"))
    plain = study.quantize(Recipe.of(sel))
    assert v.name == "tacq-3bit-roth-2.00%" and v.spec.rotation == "hadamard"
    assert v.size.bpw_honest == plain.size.bpw_honest  # R is drawn from a seed: no bytes
    mods = packed_modules(v.model)
    assert all(m.rotation and m.rotation[0] == "hadamard" for m in mods.values())
    assert sum(len(m.kept_index) for m in mods.values()) == v.size.n_kept > 0
    ids = torch.randint(3, 99, (2, 16), generator=torch.Generator().manual_seed(0))
    fp, got = _logits(tiny_lm.model, ids), _logits(v.model, ids)
    assert not torch.allclose(got, _logits(plain.model, ids))  # another format, not a no-op
    assert (got - fp).abs().mean() < (fp - fp.mean()).abs().mean()  # still near the model

    folder = save_packed(tmp_path / "rot", tiny_lm, v)
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert (qc["rotation"], qc["rotation_seed"]) == ("hadamard", 0)
    assert describe_packed(folder)["kept weights"] == v.size.n_kept
    loaded = load_quantized(folder)
    for name, m in packed_modules(loaded).items():
        assert torch.equal(m.dequantize(), mods[name].dequantize()), name
    assert torch.equal(_logits(loaded, ids), got)
    back = load_variant(folder, tiny_lm.model)
    assert back.spec == v.spec and back.name == v.name
    assert torch.equal(_logits(back.model, ids), got)


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_rotated_variant_with_tuned_rounding_round_trips(study, tiny_lm, tmp_path):
    sel = Selection("tacq", bits=2, ratio=0.02)
    plain = study.quantize(Recipe.of(sel, rotation="hadamard"))
    v = study.quantize(Recipe.of(sel, rotation="hadamard", rounding_steps=20))
    assert v.spec.rotation == "hadamard" and v.spec.rounding_steps == 20
    assert v.size.bpw_honest == plain.size.bpw_honest  # the same format, other codes
    mods, before = packed_modules(v.model), packed_modules(plain.model)
    assert any(not torch.equal(mods[n].dequantize(), before[n].dequantize()) for n in mods)
    ids = torch.randint(3, 99, (2, 16), generator=torch.Generator().manual_seed(0))
    got = _logits(v.model, ids)
    loaded = load_quantized(save_packed(tmp_path / "rot-r", tiny_lm, v))
    for name, m in packed_modules(loaded).items():
        assert m.rotation == mods[name].rotation
        assert torch.equal(m.dequantize(), mods[name].dequantize()), name
    assert torch.equal(_logits(loaded, ids), got)


def test_plain_gptq_rotated_keeps_nothing(study):
    v = study.quantize(Recipe.of(Selection(bits=2, ratio=0.0), rotation="hadamard"))
    assert v.name == "gptq-2bit-roth" and v.size.n_kept == 0
    assert all(len(m.kept_index) == 0 for m in packed_modules(v.model).values())


def test_damaged_rotation_in_config_is_refused(study, tiny_lm, tmp_path):
    v = study.quantize(Recipe.of(Selection("tacq", bits=2, ratio=0.02), rotation="hadamard"))
    folder = save_packed(tmp_path / "rot", tiny_lm, v)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["rotation"] = "spiral"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(TacqError, match="Unknown rotation 'spiral'"):
        load_quantized(folder)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rotation": "spiral"}, "Unknown rotation"),
        ({"rotation": "hadamard", "method": "rtn"}, "for GPTQ"),
    ],
)
def test_what_a_rotation_does_not_combine_with_is_refused(study, kwargs, message):
    with pytest.raises(TacqError, match=message):
        study.quantize(Recipe.of(Selection("tacq", bits=2, ratio=0.02), **kwargs))


def test_rotated_candidates_reuse_the_grid_of_rows_without_kept_weights(study, tiny_lm, tiny_task,
                                                                         monkeypatch):  # fmt: skip
    """Auto-fit's rotated candidates of one bit width: a row with no kept weight is the same
    rotated row in each, so a later candidate searches only rows with kept weights, and its
    codes and scales equal those of a run that searches every row."""
    import tacq.formats.grid as grid
    import tacq.quant.gptq as gptq

    searched: list[int] = []
    real = grid.find_params

    def counting(W, M, cfg, unmasked=None):
        if unmasked is None:
            searched.append(W.shape[0])
        return real(W, M, cfg, unmasked)

    monkeypatch.setattr(grid, "find_params", counting)
    monkeypatch.setattr(gptq, "find_params", counting)
    sel = Selection("tacq", 2, 0.01)
    recipe = Recipe.of(sel, rotation="hadamard")
    rows = sum(lin.weight.shape[0] for lin in quantizable_linears(tiny_lm.model).values())
    study.ranking(sel)  # its unmasked reference, in the original basis, searched every row
    searched.clear()
    study.quantize(recipe)
    assert sum(searched) == rows  # the first candidate searches every row once
    searched.clear()
    wider = study.quantize(replace(recipe, ratio=0.02))
    changed = sum(int(m.any(1).sum()) for m in study.ranking(sel).masks(0.02).values())
    assert 0 < sum(searched) == changed < rows

    alone = Study(tiny_lm, tiny_task)
    alone.stats = study.stats
    again = alone.quantize(replace(recipe, ratio=0.02))  # no earlier candidate: every row
    for name, lq in wider.result.layers.items():
        other = again.result.layers[name]
        for part in ("codes", "scale", "zero", "kept_values"):
            assert torch.equal(getattr(lq, part), getattr(other, part)), (name, part)
