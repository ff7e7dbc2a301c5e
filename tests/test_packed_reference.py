"""The unmasked reference is held bit-packed (bits/8 bytes per weight, not a code byte and
a mask bool), reads exactly as the unpacked LayerQuant did, and is cached packed on disk."""

from __future__ import annotations

import itertools
from dataclasses import asdict

import pytest
import torch

from tacq.cache import cache_key, save_atomic, tacq_home
from tacq.circuit.select import Selection
from tacq.formats.grid import DEFAULT_DAMP, GPTQConfig
from tacq.formats.held import PackedLayerQuant
from tacq.formats.packed import packed_row_bytes
from tacq.models import quantizable_linears
from tacq.quant.gptq import gptq_matrix, rtn_matrix
from tacq.quant.quantize import QuantResult, quantize_model
from tacq.quant.recipe import Recipe
from tacq.study.workflow import Study
from tests.test_gptq_fast import FIELDS, assert_identical


def _problem(n: int, out: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out, n, generator=g) * 0.05
    X = torch.randn(2 * n, n, generator=g)
    return W, 2 * X.T @ X / X.shape[0]


def _assert_same_reference(a: QuantResult, b: QuantResult) -> None:
    assert list(a.layers) == list(b.layers)
    for n, lq in a.layers.items():
        assert_identical(lq, b.layers[n], n)
        assert torch.equal(lq.dequantize(), b.layers[n].dequantize()), n


# n=70: rows padded to whole words and a shorter last group
@pytest.mark.parametrize(
    "bits,group_size,rtn", list(itertools.product([2, 3, 4], [None, 32], [False, True]))
)
def test_packed_layer_reads_bit_for_bit_as_the_unpacked_one(bits, group_size, rtn):
    W, H = _problem(70)
    cfg = GPTQConfig(bits=bits, group_size=group_size)
    lq = rtn_matrix(W, None, cfg) if rtn else gptq_matrix(W, H, None, cfg)
    p = PackedLayerQuant.from_layer(lq)
    assert p.packed.dtype == torch.uint8
    assert p.packed.nbytes == 24 * packed_row_bytes(70, bits)
    for f in FIELDS:
        x, y = getattr(p, f), getattr(lq, f)
        assert (x is None and y is None) or (torch.equal(x, y) and x.dtype == y.dtype), f
    assert not p.keep_mask.any() and p.kept_values.numel() == 0
    assert torch.equal(p.grid(), lq.grid())
    assert torch.equal(p.dequantize(), lq.dequantize())
    assert p.rotation is None and p.bits == bits and p.group_size == group_size
    back = p.layer()
    assert type(back).__name__ == "LayerQuant" and torch.equal(back.codes, lq.codes)
    held = p.held_tensors()
    assert not any(t.numel() == W.numel() for t in held.values())  # nothing per weight
    assert p.nbytes == sum(t.nbytes for t in held.values())


@pytest.mark.parametrize("rotation", [None, ("hadamard", 7)])
def test_a_masked_layer_is_held_packed_and_reads_bit_for_bit(rotation):
    """A masked (or rotated) result, as quantize_model holds it: codes packed, the mask as
    kept flat indices; every field and the dequantized weight read as the unpacked one's."""
    W, H = _problem(64)
    M = torch.zeros_like(W, dtype=torch.bool)
    M[0, 3] = M[5, 60] = M[23, 0] = True
    lq = gptq_matrix(W, H, M, GPTQConfig(bits=3, group_size=32))
    lq.rotation = rotation
    p = PackedLayerQuant.from_layer(lq)
    assert PackedLayerQuant.from_layer(p) is p
    for f in (*FIELDS, "keep_mask", "kept_values", "rotation"):
        x, y = getattr(p, f), getattr(lq, f)
        same = (
            x == y if not isinstance(x, torch.Tensor) else torch.equal(x, y) and x.dtype == y.dtype
        )
        assert (x is None and y is None) or same, f
    assert p.n_kept == 3 and p.kept_index.tolist() == [3, 5 * 64 + 60, 23 * 64]
    assert torch.equal(p.dequantize(), lq.dequantize())
    assert not torch.equal(p.dequantize(), p.grid())  # the kept weights are put back
    held = p.held_tensors()
    assert not any(t.numel() == W.numel() for t in held.values())  # nothing per weight
    assert torch.equal(p.layer().keep_mask, M) and p.layer().rotation == rotation


def test_quantize_model_holds_its_results_packed(tiny_lm, tiny_task):
    """A masked run's results, held until the variant is built, are packed (bits/8 bytes
    per weight and 6 per kept one), not a code byte and a mask bool per weight."""
    study = Study(tiny_lm, tiny_task)
    sel = Selection("magnitude", 2, 0.01)
    masks = study.ranking(sel).masks(sel.ratio)
    res = quantize_model(tiny_lm.model, study.batches(answer_only=False), GPTQConfig(bits=2), masks)
    for name, lq in res.layers.items():
        assert isinstance(lq, PackedLayerQuant), name
        assert torch.equal(lq.keep_mask, masks[name]), name
        out_f, in_f = lq.keep_mask.shape
        held = [v for v in vars(lq).values() if isinstance(v, torch.Tensor)]
        assert not any(t.numel() == out_f * in_f for t in held), name
    assert res.kept == sum(int(m.sum()) for m in masks.values()) > 0


@pytest.mark.parametrize("group_size", [None, 32])
def test_the_reference_holds_packed_codes_only(tiny_lm, tiny_task, group_size):
    ref = Study(tiny_lm, tiny_task).references.get(2, group_size=group_size)
    linears = quantizable_linears(tiny_lm.model)
    assert list(ref.layers) == list(linears)
    for name, lq in ref.layers.items():
        out_f, in_f = linears[name].weight.shape
        assert isinstance(lq, PackedLayerQuant), name
        assert lq.packed.nbytes == out_f * packed_row_bytes(in_f, 2), name
        held = [v for v in vars(lq).values() if isinstance(v, torch.Tensor)]
        assert not any(t.numel() == out_f * in_f for t in held), name  # no code byte or bool
        assert sum(t.nbytes for t in held) == lq.nbytes
        per_weight = lq.nbytes / (out_f * in_f)
        assert per_weight < 0.25 + (0.4 if group_size else 0.2), name  # was 2 B/weight


@pytest.mark.parametrize("group_size", [None, 32])
@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_variants_are_the_same_with_the_unpacked_reference(tiny_lm, tiny_task, group_size):
    packed = Study(tiny_lm, tiny_task)
    packed.collect()
    ref = packed.references.get(2, group_size=group_size)
    old = Study(tiny_lm, tiny_task)  # the same study, holding the reference as before
    old.stats = packed.stats
    cfg = GPTQConfig(bits=2, group_size=group_size)
    want = quantize_model(tiny_lm.model, old.batches(answer_only=False), cfg)
    _assert_same_reference(ref, want)
    old.references.done[(2, "gptq", group_size, DEFAULT_DAMP)] = want
    for metric, ratio in (("tacq", 0.02), ("spqr", 0.01), (None, 0.0)):
        sel = Selection(metric or "tacq", bits=2, ratio=ratio, group_size=group_size)
        a, b = packed.quantize(Recipe.of(sel)), old.quantize(Recipe.of(sel))
        assert a.name == b.name
        _assert_same_reference(a.result, b.result)
        ids = torch.arange(3, 40).view(1, -1)
        with torch.no_grad():
            assert torch.equal(a.model(ids).logits, b.model(ids).logits), a.name


def _reference_file(study: Study, bits: int) -> tuple:
    cfg = GPTQConfig(bits=bits)
    parts = (study.lm.fingerprint, study.calib.digest, asdict(study.calib.data_cfg), asdict(cfg))
    return parts, sorted((tacq_home() / "quant").glob("[!q]*.safetensors"))


def test_the_disk_cache_round_trips_packed(tiny_lm, tiny_task, monkeypatch):
    first = Study(tiny_lm, tiny_task).references.get(3)
    _, files = _reference_file(Study(tiny_lm, tiny_task), 3)
    assert len(files) == 1
    from safetensors import safe_open

    with safe_open(str(files[0]), framework="pt") as f:
        keys = set(f.keys())
        for name, m in quantizable_linears(tiny_lm.model).items():
            assert f"codes.{name}" not in keys
            shape = f.get_slice(f"packed.{name}").get_shape()
            assert shape == [m.weight.shape[0], packed_row_bytes(m.weight.shape[1], 3)]
    monkeypatch.setattr(
        "tacq.quant.quantize.quantize_model", lambda *a, **k: pytest.fail("GPTQ ran")
    )
    again = Study(tiny_lm, tiny_task).references.get(3)
    assert all(isinstance(lq, PackedLayerQuant) for lq in again.layers.values())
    _assert_same_reference(again, first)


def test_a_reference_file_with_byte_codes_is_not_read_as_packed(tiny_lm, tiny_task):
    """A cache entry written before packing (codes.{name}, one uint8 per code) is never
    taken for a packed one: not under its old key, nor if one carried the new key."""
    study = Study(tiny_lm, tiny_task)
    parts, _ = _reference_file(study, 2)
    want = quantize_model(tiny_lm.model, study.batches(answer_only=False), GPTQConfig(bits=2))
    wrong = {}  # the old layout, with every code shifted one level so a misread shows
    for n, lq in want.layers.items():
        codes = (lq.codes.int() + 1).clamp(max=3).to(torch.uint8)
        wrong |= {f"codes.{n}": codes, f"scale.{n}": lq.scale, f"zero.{n}": lq.zero}
        wrong[f"hinv.{n}"] = lq.hinv_diag
    old_key = cache_key("ref", *parts)
    old_path = tacq_home() / "quant" / f"{old_key[:32]}.safetensors"
    save_atomic(old_path, wrong, {"key": old_key, "seconds": "0.0"})
    got = study.references.get(2)
    _assert_same_reference(got, want)
    assert old_path.exists()  # left alone, merely not matched
    # the same old layout under whatever key and path the packed reference now uses
    new_files = [p for p in _reference_file(study, 2)[1] if p != old_path]
    assert len(new_files) == 1
    from safetensors import safe_open

    with safe_open(str(new_files[0]), framework="pt") as f:
        new_key = f.metadata()["key"]
    assert new_key != old_key
    save_atomic(new_files[0], wrong, {"key": new_key, "seconds": "0.0"})
    again = Study(tiny_lm, tiny_task).references.get(2)
    _assert_same_reference(again, want)
