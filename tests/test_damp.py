"""GPTQ's Hessian damping as a Study / CLI option: it changes the rounding, names the
variant, survives export, and keeps its own reference cache entry."""

from __future__ import annotations

import torch

from tacq.circuit.select import Selection
from tacq.formats.grid import DEFAULT_DAMP
from tacq.quant.recipe import Recipe
from tacq.study.workflow import Study


def _weights(v) -> dict[str, torch.Tensor]:
    return {n: lq.dequantize() for n, lq in v.result.layers.items()}


def test_more_damping_changes_the_rounding_and_is_recorded(tmp_path, tiny_lm, tiny_task):
    from tacq.formats.export import save_packed
    from tacq.quant.variant import load_variant
    from tests.tiny import fp16_exact

    fp16_exact(tiny_lm.model)
    study = Study(tiny_lm, tiny_task)
    study.collect()
    sel = Selection("tacq", 2, 0.01)
    plain = study.quantize(Recipe.of(sel))
    damped = study.quantize(Recipe.of(sel, damp=0.1))
    assert plain.spec.damp == DEFAULT_DAMP and plain.name == "tacq-2bit-1.00%"
    assert damped.spec.damp == 0.1 and damped.name == "tacq-2bit-d0.1-1.00%"
    a, b = _weights(plain), _weights(damped)
    assert any(not torch.equal(a[n], b[n]) for n in a)  # GPTQ compensated differently
    # the same circuit is kept at full precision either way: saliency does not see damping
    for n, lq in plain.result.layers.items():
        assert torch.equal(lq.keep_mask, damped.result.layers[n].keep_mask), n
    assert damped.size == plain.size
    save_packed(tmp_path / "d", tiny_lm, damped)
    back = load_variant(tmp_path / "d")
    assert back.spec == damped.spec and back.name == damped.name


def test_plain_gptq_references_are_kept_apart_by_damping(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    study.collect()
    sel = Selection(bits=3, ratio=0.0)
    plain = study.quantize(Recipe.of(sel))
    damped = study.quantize(Recipe.of(sel, damp=0.5))
    again = study.quantize(Recipe.of(sel))
    a, b, c = _weights(plain), _weights(damped), _weights(again)
    assert any(not torch.equal(a[n], b[n]) for n in a)
    assert all(torch.equal(a[n], c[n]) for n in a)  # the default reference, not the damped one
    assert damped.name == "gptq-3bit-d0.5" and plain.name == "gptq-3bit"


def test_rtn_ignores_damping_and_records_the_default(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    v = study.quantize(Recipe.of(Selection("tacq", 2, 0.0), method="rtn", damp=0.1))
    assert v.spec.damp == DEFAULT_DAMP and v.name == "rtn-2bit"
    assert len(study.references.done) == 1  # the one plain RTN reference, not a damped twin
