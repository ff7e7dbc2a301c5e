"""Phi-3's fused qkv_proj / gate_up_proj are quantized, counted and exported like the rest."""

from __future__ import annotations

import pytest
import torch

from tacq.circuit.select import Selection
from tacq.formats.grid import GPTQConfig
from tacq.formats.packed import packed_modules
from tacq.models import LoadedModel, quantizable_linears
from tacq.quant.gptq import gptq_stacked
from tacq.quant.recipe import Recipe
from tacq.study.workflow import Study
from tests.tiny import fp16_exact


@pytest.fixture
def tiny_phi3(tiny_lm):
    from tests.tiny import make_tiny_phi3

    return LoadedModel(make_tiny_phi3(), tiny_lm.tokenizer, "tiny-phi3", "memory", "phi3-0")


def test_every_weight_of_a_phi3_block_is_quantized(tiny_phi3, tiny_task, tmp_path):
    linears = quantizable_linears(tiny_phi3.model)
    kinds = sorted({n.rsplit(".", 1)[-1] for n in linears})
    assert kinds == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    block_weights = sum(
        m.weight.numel()
        for n, m in tiny_phi3.model.named_modules()
        if isinstance(m, torch.nn.Linear) and ".layers." in n
    )
    fp16_exact(tiny_phi3.model)
    study = Study(tiny_phi3, tiny_task)
    study.collect()
    v = study.quantize(Recipe.of(Selection("tacq", 2, 0.01)))
    assert set(v.result.layers) == set(linears)
    assert v.size.n_weights == block_weights  # BPW covers q/k/v and gate/up too
    assert v.size.n_kept == int(0.01 * block_weights)
    for name, mod in packed_modules(v.model).items():
        assert not torch.equal(mod.dequantize(), linears[name].weight), name  # quantized

    from tacq.formats.export import save_packed
    from tacq.quant.variant import load_variant

    save_packed(tmp_path / "phi3", tiny_phi3, v)
    back = load_variant(tmp_path / "phi3")
    ids = torch.tensor([[5, 17, 33, 60, 2, 90]])
    with torch.no_grad():
        assert torch.equal(back.model(ids).logits, v.model(ids).logits)


def test_fused_qkv_quantized_whole_equals_its_parts_quantized_together():
    """Quantizing the fused matrix is quantizing q, k and v with their shared Hessian."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(256, 64, generator=g)
    H = 2 * X.T @ X / len(X)
    W = torch.randn(64 + 32 + 32, 64, generator=g)
    M = torch.rand(W.shape, generator=g) < 0.01
    cfg = GPTQConfig(bits=2)
    (whole,) = gptq_stacked([W], H, [M], cfg)
    parts = gptq_stacked(list(W.split([64, 32, 32])), H, list(M.split([64, 32, 32])), cfg)
    joined = torch.cat([p.dequantize() for p in parts])
    assert torch.equal(torch.cat([p.codes for p in parts]), whole.codes)
    torch.testing.assert_close(joined, whole.dequantize(), rtol=0, atol=1e-6)
