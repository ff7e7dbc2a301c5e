"""The block walker: masks honoured, the source model untouched, variants self-consistent."""

from __future__ import annotations

import torch

from tacq.data.batches import Encoded, make_batches
from tacq.formats.grid import GPTQConfig
from tacq.formats.packed import packed_model
from tacq.models import quantizable_linears
from tacq.quant.quantize import quantize_model


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
    from tacq.formats.grid import GPTQConfig
    from tacq.quant.quantize import quantize_model

    batches = _batches()
    cfg = GPTQConfig(bits=3)
    resident = quantize_model(tiny_llama, batches, cfg)
    streamed = quantize_model(tiny_llama, batches, cfg, exec_device="cpu")
    for name, lq in resident.layers.items():
        assert torch.equal(lq.codes, streamed.layers[name].codes)
    assert next(tiny_llama.parameters()).device.type == "cpu"


def test_hessians_from_the_original_activations(tiny_llama):
    """sequential=False: every Linear is GPTQ on the Hessian of the *original* model's inputs
    to it (walked here by hand on the untouched model), not on its quantized predecessors'."""
    from tacq.models import SEQUENTIAL_GROUPS, decoder_layers, module_kind
    from tacq.quant.gptq import gptq_stacked
    from tacq.quant.quantize import _run_block, capture_block_inputs, group_hessians

    cfg = GPTQConfig(bits=2)
    before = {n: p.clone() for n, p in tiny_llama.state_dict().items()}
    res = quantize_model(tiny_llama, _batches(), cfg, sequential=False)
    seq = quantize_model(tiny_llama, _batches(), cfg)
    for n, p in tiny_llama.state_dict().items():
        assert torch.equal(p, before[n]), n  # the original is untouched

    names = {id(m): n for n, m in quantizable_linears(tiny_llama).items()}
    inputs = capture_block_inputs(tiny_llama, _batches())
    checked = 0
    for block in decoder_layers(tiny_llama):
        for group in SEQUENTIAL_GROUPS:
            members = {
                names[id(m)]: m
                for m in block.modules()
                if id(m) in names and module_kind(names[id(m)]) in group
            }
            for shared in group_hessians(block, members, inputs):
                weights = [members[n].weight.data for n in shared.names]
                lqs = gptq_stacked(weights, shared.H, [None] * len(weights), cfg, None)
                for n, lq in zip(shared.names, lqs):
                    assert torch.equal(res.layers[n].dequantize(), lq.dequantize()), n
                    checked += 1
        inputs = [(h, kw, m) for h, (_, kw, m) in zip(_run_block(block, inputs), inputs)]
    assert checked == len(res.layers)
    # the first group sees the same inputs either way; later ones do not
    first = next(iter(res.layers))
    assert torch.equal(res.layers[first].dequantize(), seq.layers[first].dequantize())
    assert any(
        not torch.equal(lq.dequantize(), seq.layers[n].dequantize()) for n, lq in res.layers.items()
    )
