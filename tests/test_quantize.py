"""The block walker: masks honoured, the source model untouched, variants self-consistent."""

from __future__ import annotations

import torch

from tacq.data import Encoded, make_batches
from tacq.gptq import GPTQConfig
from tacq.models import quantizable_linears
from tacq.packed import packed_model
from tacq.quantize import quantize_model


def _batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    enc = [
        Encoded(tuple(torch.randint(3, 128, (n,), generator=g).tolist()), 2)
        for n in (20, 13, 24, 9)
    ]
    return make_batches(enc, batch_size=2, pad_id=0, answer_only=False)


def _masks(model, share=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        n: torch.rand(m.weight.shape, generator=g) < share
        for n, m in quantizable_linears(model).items()
    }


def test_copy_mode_leaves_model_unchanged_and_keeps_masked_weights(tiny_llama):
    before = {n: p.clone() for n, p in tiny_llama.state_dict().items()}
    masks = _masks(tiny_llama)
    res = quantize_model(tiny_llama, _batches(), GPTQConfig(bits=2), masks, in_place=False)
    for n, p in tiny_llama.state_dict().items():
        assert torch.equal(p, before[n]), n
    assert set(res.layers) == set(quantizable_linears(tiny_llama))
    assert res.kept == sum(int(m.sum()) for m in masks.values())
    for name, lq in res.layers.items():
        W = before[f"{name}.weight"]
        Wq = lq.dequantize()
        M = masks[name]
        # kept weights are their fp16 values (only compensation of earlier columns moves them)
        assert torch.equal(lq.keep_mask, M)
        assert Wq.unique().numel() > 4  # not all on the grid: kept values differ
        assert (Wq[~M] - W[~M]).abs().mean() > 0  # the rest really was quantized
        grid = lq.scale[:, None] * (lq.codes.float() - lq.zero[:, None])
        assert torch.equal(Wq[~M], grid[~M])


def test_in_place_equals_copy(tiny_llama):
    import copy

    twin = copy.deepcopy(tiny_llama)
    a = quantize_model(tiny_llama, _batches(), GPTQConfig(bits=3), in_place=False)
    b = quantize_model(twin, _batches(), GPTQConfig(bits=3), in_place=True)
    for name, lq in a.layers.items():
        assert torch.equal(lq.dequantize(), b.layers[name].dequantize()), name
        assert torch.equal(quantizable_linears(twin)[name].weight, lq.dequantize())


def test_gptq_beats_rtn_on_model_output(tiny_llama):
    ids = _batches()[0].input_ids  # GPTQ minimises the error on its calibration inputs
    with torch.no_grad():
        ref = tiny_llama(input_ids=ids).logits
    errs = {}
    for method in ("gptq", "rtn"):
        res = quantize_model(tiny_llama, _batches(), GPTQConfig(bits=2, method=method))
        with torch.no_grad():
            errs[method] = float(
                (packed_model(tiny_llama, res.layers)(input_ids=ids).logits - ref).pow(2).mean()
            )
    assert errs["gptq"] < errs["rtn"]


def test_streaming_blocks_gives_the_same_result(tiny_llama):
    """exec_device streams blocks through a device one at a time; on one device it must
    match the resident run exactly (a GPU run is the same code with real moves)."""
    from tacq.gptq import GPTQConfig
    from tacq.quantize import quantize_model

    batches = _batches()
    cfg = GPTQConfig(bits=3)
    resident = quantize_model(tiny_llama, batches, cfg)
    streamed = quantize_model(tiny_llama, batches, cfg, exec_device="cpu")
    for name, lq in resident.layers.items():
        assert torch.equal(lq.codes, streamed.layers[name].codes)
    assert next(tiny_llama.parameters()).device.type == "cpu"
