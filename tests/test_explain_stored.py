"""What a kept weight becomes: plain masked GPTQ moves it (earlier columns' compensation),
the rotated path keeps it exact, and the zoom's table shows original and stored values.

The rotated path's exactness at the layer level is also asserted by
tests/test_rotation.py::test_quantize_rotated_keeps_the_circuit_exact_and_the_model_unchanged.
"""

from __future__ import annotations

import gradio as gr
import pytest
import torch

from app.state import UserState
from tacq.circuit.select import Selection
from tacq.formats.grid import GPTQConfig, kept_in_fp16
from tacq.formats.packed import packed_modules
from tacq.quant.gptq import gptq_matrix
from tacq.quant.recipe import Recipe
from tacq.study.workflow import Study
from tests.tiny import fp16_exact


def test_masked_gptq_moves_kept_weights_by_compensation():
    """Kept weights add no error of their own but absorb the updates of earlier columns."""
    g = torch.Generator().manual_seed(4)
    W = torch.randn(64, 128, generator=g).half().float()  # fp16-exact: no rounding to blame
    X = torch.randn(1024, 128, generator=g) @ torch.randn(128, 128, generator=g) * 0.3
    H = 2 * X.T @ X / X.shape[0]
    M = torch.rand(W.shape, generator=g) < 0.02
    M[:, 0] = False
    M[5, 0] = True  # column 0: quantized first, nothing compensated into it yet
    lq = gptq_matrix(W, H, M, GPTQConfig(bits=2))
    stored = lq.dequantize()
    assert torch.equal(stored[5, 0], W[5, 0])
    later = M.clone()
    later[:, 0] = False
    moved = ((stored[later] - W[later]).abs() / W[later].abs()).median()
    assert (stored[later] != W[later]).float().mean() > 0.9  # nearly every one changed
    assert moved > 0.01, float(moved)  # and not by fp16 rounding: by percent


@pytest.fixture
def study(tiny_lm, tiny_task):
    fp16_exact(tiny_lm.model)  # kept_in_fp16 is then the identity: "exact" means equal
    s = Study(tiny_lm, tiny_task)
    s.collect()
    return s


SEL = Selection("tacq", 2, 0.02)


def _listed(why, name, v):
    """The listed weights' (row, col), original W and the variant's dense W_q there."""
    r = torch.tensor(why.top["row"].tolist())
    c = torch.tensor(why.top["col"].tolist())
    return r, c, v.result.layers[name].dequantize()[r, c]


def test_zoom_table_shows_original_and_stored_for_plain_and_rotated(study, tiny_lm):
    from tacq.study.explain import circuit_variant, with_stored

    name = study.ranking(SEL).names[5]
    plain = study.quantize(Recipe.of(SEL))
    why = with_stored(study.explain(SEL, name), plain)
    r, c, want = _listed(why, name, plain)
    W = tiny_lm.model.get_submodule(name).weight.detach().float()
    assert len(why.top) > 0 and why.stored_in == plain.name
    assert list(why.top.columns[:4]) == ["row", "col", "W", "stored"]
    assert torch.equal(torch.tensor(why.top["W"].tolist()), W[r, c])  # W: the original
    assert torch.equal(torch.tensor(why.top["stored"].tolist()), want)  # stored: the variant's
    assert (why.top["stored"] != why.top["W"]).any()  # plain GPTQ moved some kept weights
    assert plain.name in why.stored_sentence() and "compensation" in why.stored_sentence()

    rotated = study.quantize(Recipe.of(SEL, rotation="hadamard"))
    rot = with_stored(study.explain(SEL, name), rotated)
    kept = packed_modules(rotated.model)[name].kept_values.float()
    assert torch.equal(
        torch.tensor(rot.top["stored"].tolist()), torch.tensor(rot.top["W"].tolist())
    )
    assert torch.equal(kept_in_fp16(W[packed_modules(rotated.model)[name].layer().keep_mask]), kept)
    assert "exact" in rot.stored_sentence()
    rtn = with_stored(
        study.explain(SEL, name), study.quantize(Recipe.of(SEL, method="rtn"))
    )  # no compensation
    assert list(rtn.top["stored"]) == list(rtn.top["W"]) and "exact" in rtn.stored_sentence()

    variants = {plain.name: plain, rotated.name: rotated}
    fp, digest = tiny_lm.fingerprint, study.digest()
    assert circuit_variant(variants.values(), SEL, digest, fp) is rotated  # the latest made
    assert circuit_variant([plain], SEL, digest, fp) is plain
    assert circuit_variant(variants.values(), SEL.at(ratio=0.01), digest, fp) is None
    assert circuit_variant(variants.values(), SEL.at(bits=3), digest, fp) is None
    assert circuit_variant(variants.values(), SEL, "other examples", fp) is None


def test_zoom_says_when_no_variant_holds_this_circuit(study, tmp_path):
    from app.circuit_tab import zoom_explanation

    user = UserState("e" * 32, tmp_path)
    user.study = study
    name = study.ranking(SEL).names[5]
    text, table = zoom_explanation(user, SEL, name)
    assert "No quantized variant" in text and "stored" not in table.columns
    v = study.quantize(Recipe.of(SEL))
    user.add_variant(v, study.lm)
    text, table = zoom_explanation(user, SEL, name)
    assert f"**{v.name}**" in text and "stored" in table.columns
    assert table["stored"].notna().all()


def test_toy_slider_refuses_nan_with_a_message():
    from app.howto_tab import render

    for bad in (float("nan"), float("inf"), -1.0, 31.0):
        with pytest.raises(gr.Error, match="between 0 and 30") as e:
            render(bad, 2)
        assert "Internal error" not in str(e.value)
    with pytest.raises(gr.Error, match="2, 3 or 4"):
        render(10, 5)
    text, _ = render(10, 2)
    assert "k = ⌊0.10 × 96⌋ = 9" in text
