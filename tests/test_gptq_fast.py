"""The fast GPTQ path (stacked shared-input Linears, leaner column loop, reused search,
early-stopping Hessian passes) gives bit-identical results to the per-Linear baseline."""

from __future__ import annotations

import itertools

import pytest
import torch

from bench.gptq_yardstick import baseline_group, gptq_matrix_baseline
from tacq.formats.grid import GPTQConfig, LayerQuant, find_params
from tacq.models import decoder_layers, quantizable_linears
from tacq.quant.gptq import gptq_stacked
from tacq.quant.quantize import capture_block_inputs, group_hessians, quantize_model
from tacq.quant.recipe import Recipe
from tests.test_quantize import _batches, _masks

FIELDS = ("codes", "scale", "zero", "keep_mask", "kept_values", "hinv_diag")


def assert_identical(a: LayerQuant, b: LayerQuant, what: str) -> None:
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        same = x is None and y is None or x is not None and y is not None and torch.equal(x, y)
        assert same, f"{what}: {f} differs"


def _problem(seed: int, n: int, outs: tuple[int, ...], frac: float):
    g = torch.Generator().manual_seed(seed)
    Ws = [torch.randn(o, n, generator=g) * 0.05 for o in outs]
    X = torch.randn(2 * n, n, generator=g) @ torch.randn(n, n, generator=g) * 0.3
    Ms = [torch.rand(o, n, generator=g) < frac for o in outs]
    return Ws, 2 * X.T @ X / X.shape[0], Ms


# n=40: one block covers every column (the flat-kernel case); 200: several blocks and a tail
@pytest.mark.parametrize(
    "n,bits,frac,act_order",
    list(itertools.product([40, 200], [2, 3], [0.0, 0.03], [False, True])),
)
def test_stacked_matrices_equal_one_at_a_time(n, bits, frac, act_order):
    Ws, H, Ms = _problem(n + bits, n, (48, 16, 16), frac)
    cfg = GPTQConfig(bits=bits, act_order=act_order, block_size=64)
    stacked = gptq_stacked(Ws, H, Ms, cfg)
    for i, (W, M, lq) in enumerate(zip(Ws, Ms, stacked)):
        assert_identical(lq, gptq_matrix_baseline(W, H, M, cfg), f"layer {i}")
    # the split results own their tensors (safetensors refuses shared storage)
    ptrs = {lq.codes.untyped_storage().data_ptr() for lq in stacked}
    assert len(ptrs) == len(stacked)


def test_search_reuses_unmasked_rows_exactly():
    Ws, _, Ms = _problem(3, 96, (64,), 0.02)
    W, M = Ws[0], Ms[0]
    M[:10] = False  # some rows with no kept entry
    cfg = GPTQConfig(bits=2)
    unmasked = find_params(W, None, cfg)
    reused = find_params(W, M, cfg, unmasked)
    full = find_params(W, M, cfg)
    assert torch.equal(reused[0], full[0]) and torch.equal(reused[1], full[1])
    assert not torch.equal(full[0], unmasked[0])  # the kept rows really were searched again


def test_shared_inputs_and_early_stop_give_the_same_hessians(tiny_llama):
    block = decoder_layers(tiny_llama)[0]
    linears = quantizable_linears(tiny_llama)
    qkv = {n: m for n, m in linears.items() if n.startswith("model.layers.0.self_attn.")}
    qkv = {n: m for n, m in qkv.items() if not n.endswith("o_proj")}
    inputs = capture_block_inputs(tiny_llama, _batches())
    fast = group_hessians(block, qkv, inputs, stop_early=True)
    full = group_hessians(block, qkv, inputs, stop_early=False)
    assert [s.names for s in fast] == [list(qkv)]  # q, k and v read one input: one H
    assert torch.equal(fast[0].H, full[0].H)


@pytest.mark.parametrize("method,bits", [("gptq", 2), ("gptq", 3), ("rtn", 2)])
def test_whole_model_fast_path_equals_baseline(tiny_llama, method, bits):
    cfg = GPTQConfig(bits=bits, method=method)
    masks = _masks(tiny_llama, share=0.03)
    ref_new = quantize_model(tiny_llama, _batches(), cfg)
    ref_old = quantize_model(tiny_llama, _batches(), cfg, group_quantizer=baseline_group)
    new = quantize_model(tiny_llama, _batches(), cfg, masks, unmasked=ref_new.qparams())
    old = quantize_model(tiny_llama, _batches(), cfg, masks, group_quantizer=baseline_group)
    assert list(new.layers) == list(old.layers) == list(quantizable_linears(tiny_llama))
    for name in old.layers:
        assert_identical(ref_new.layers[name], ref_old.layers[name], f"unmasked {name}")
        assert_identical(new.layers[name], old.layers[name], f"masked {name}")


def test_study_runs_the_unmasked_quantization_once_and_reuses_its_search(
    tiny_lm, tiny_task, monkeypatch
):
    """Ratios, metrics, the GPTQ baseline and a second Study (as the app's tabs and the demo
    make) run one unmasked GPTQ per bit width; masked runs reuse its grid search."""
    import tacq.quant.pipeline as pipeline
    import tacq.quant.reference as ref
    from tacq.circuit.select import Selection
    from tacq.study.workflow import Study

    calls: list[tuple[bool, bool]] = []  # (masked, was given the unmasked grid)
    real = pipeline.quantize_model

    def counting(model, batches, cfg, keep_masks=None, **kw):
        calls.append((keep_masks is not None, kw.get("unmasked") is not None))
        return real(model, batches, cfg, keep_masks, **kw)

    monkeypatch.setattr(pipeline, "quantize_model", counting)  # masked runs
    monkeypatch.setattr(ref, "quantize_model", counting)  # the unmasked reference
    study = Study(tiny_lm, tiny_task)
    study.collect()
    sel = Selection("tacq", 2, 0.01)
    study.ranking(sel)  # the circuit screen
    a = study.quantize(Recipe.of(sel))  # the quantize screen, two ratios and two metrics
    study.quantize(Recipe.of(sel.at(ratio=0.02)))
    study.quantize(Recipe.of(sel.at(metric="qal")))
    study.quantize(Recipe.of(sel.at(ratio=0.0)))  # GPTQ 2-bit: the reference itself
    Study(tiny_lm, tiny_task).quantize(
        Recipe.of(sel.at(ratio=0.0))
    )  # same examples, new Study: disk
    assert calls.count((False, False)) == 1
    assert calls.count((True, True)) == 3 and len(calls) == 4

    # Reusing the grid gives exactly what a run without reuse gives.
    slow = Study(tiny_lm, tiny_task, group_quantizer=baseline_group)
    slow.stats = study.stats
    b = slow.quantize(Recipe.of(sel))
    for name, lq in a.result.layers.items():
        assert_identical(lq, b.result.layers[name], name)


def test_other_examples_reuse_the_unmasked_grid_from_disk(tiny_lm, tiny_task):
    from tacq.data.tasks import DataConfig
    from tacq.study.workflow import Study

    Study(tiny_lm, tiny_task).references.get(3)  # writes the grid of the weights at 3 bits
    other = Study(tiny_lm, tiny_task, DataConfig(max_examples=4))  # other examples
    path, key = other.references._grid_entry(GPTQConfig(bits=3))
    assert path.exists()
    got = other.references.get(3)
    want = quantize_model(
        tiny_lm.model,
        other.batches(answer_only=False),
        GPTQConfig(bits=3),
        group_quantizer=baseline_group,
    )
    for name, lq in want.layers.items():
        assert_identical(got.layers[name], lq, name)


@pytest.mark.slow
def test_one_smollm2_block_fast_path_equals_baseline():
    from tacq.data.reading import load_task
    from tacq.data.tasks import DataConfig
    from tacq.models import load_model
    from tacq.study.workflow import Study

    lm = load_model("default")
    lm.model.model.layers = lm.model.model.layers[:1]  # one real block
    batches = Study(lm, load_task("antonyms"), DataConfig(max_examples=8)).batches(False)
    cfg = GPTQConfig(bits=2)
    masks = _masks(lm.model, share=0.0035)
    ref_new = quantize_model(lm.model, batches, cfg)
    ref_old = quantize_model(lm.model, batches, cfg, group_quantizer=baseline_group)
    new = quantize_model(lm.model, batches, cfg, masks, unmasked=ref_new.qparams())
    old = quantize_model(lm.model, batches, cfg, masks, group_quantizer=baseline_group)
    assert len(old.layers) == 7
    for name in old.layers:
        assert_identical(ref_new.layers[name], ref_old.layers[name], f"unmasked {name}")
        assert_identical(new.layers[name], old.layers[name], f"masked {name}")
