"""Packed variants in memory: exact codes, the same outputs as a dense copy, shared tensors."""

from __future__ import annotations

import copy
from unittest import mock

import pytest
import torch

import tacq.formats.packed as packed_mod
from tacq.formats.grid import GPTQConfig, LayerQuant
from tacq.formats.packed import (
    PackedLinear,
    dense_copy,
    pack_rows,
    packed_matvec,
    packed_model,
    packed_modules,
    packed_row_bytes,
    unpack_rows,
)
from tacq.models import quantizable_linears
from tacq.quant.quantize import quantize_model
from tacq.quant.recipe import Recipe
from tests.test_quantize import _batches, _masks


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("shape", [(1, 1), (3, 8), (5, 13), (4, 64), (2, 1001)])
def test_rows_pack_and_unpack_exactly(bits, shape):
    g = torch.Generator().manual_seed(shape[1])
    codes = torch.randint(0, 2**bits, shape, generator=g, dtype=torch.uint8)
    codes[0, 0], codes[-1, -1] = 0, 2**bits - 1  # the extremes
    packed = pack_rows(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (shape[0], packed_row_bytes(shape[1], bits))
    assert packed.numel() * 8 <= codes.numel() * bits + shape[0] * 7 * bits  # row padding
    assert torch.equal(unpack_rows(packed, bits, shape[1]), codes.int())


def _layer(bits: int, group_size: int | None, keep: float, seed: int = 0) -> LayerQuant:
    g = torch.Generator().manual_seed(seed)
    out_f, in_f = 6, 40
    qshape = (out_f,) if group_size is None else (out_f, -(-in_f // group_size))
    mask = torch.rand(out_f, in_f, generator=g) < keep
    return LayerQuant(
        torch.randint(0, 2**bits, (out_f, in_f), generator=g, dtype=torch.uint8),
        (torch.rand(qshape, generator=g) + 0.1).half().float(),
        torch.randint(0, 2**bits, qshape, generator=g).float(),
        mask,
        torch.randn(int(mask.sum()), generator=g).half(),
        bits,
        None,
        group_size,
    )


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("group_size", [None, 8, 16])
def test_packed_linear_dequantizes_exactly(bits, group_size):
    lq = _layer(bits, group_size, keep=0.05)
    mod = PackedLinear.from_layer(lq)
    assert torch.equal(mod.dequantize(), lq.dequantize())
    back = mod.layer()
    assert torch.equal(back.codes, lq.codes) and torch.equal(back.keep_mask, lq.keep_mask)
    assert torch.equal(back.kept_values, lq.kept_values)
    assert torch.equal(back.scale, lq.scale) and torch.equal(back.zero, lq.zero)
    x = torch.randn(3, 40)
    assert torch.equal(mod(x), torch.nn.functional.linear(x, lq.dequantize()))
    assert mod.kept_index.dtype == torch.int32 and mod.kept_values.dtype == torch.float16


@pytest.fixture
def quantized(tiny_llama):
    res = quantize_model(tiny_llama, _batches(), GPTQConfig(bits=2), _masks(tiny_llama))
    return tiny_llama, res


def test_packed_model_matches_a_dense_copy_and_shares_the_rest(quantized):
    model, res = quantized
    before = {n: p.clone() for n, p in model.state_dict().items()}
    packed = packed_model(model, res.layers)
    dense = copy.deepcopy(model)
    with torch.no_grad():
        for name, lin in quantizable_linears(dense).items():
            lin.weight.copy_(res.layers[name].dequantize())
    ids = _batches()[0].input_ids
    with torch.no_grad():
        assert torch.equal(packed(input_ids=ids).logits, dense(input_ids=ids).logits)
    # the original is untouched and still a plain model
    for n, p in model.state_dict().items():
        assert torch.equal(p, before[n]), n
    assert not packed_modules(model) and len(packed_modules(packed)) == len(res.layers)
    # everything not quantized is the original's own tensor, not a copy
    assert packed.model.embed_tokens.weight is model.model.embed_tokens.weight
    assert packed.model.norm.weight is model.model.norm.weight
    assert packed.lm_head.weight is model.lm_head.weight
    assert not quantizable_linears(packed)


def test_packed_model_holds_about_the_bits_it_claims(quantized):
    model, res = quantized
    packed = packed_model(model, res.layers)
    owned = sum(b.numel() * b.element_size() for b in packed.buffers() if b.dtype != torch.float32)
    fp16 = sum(2 * m.weight.numel() for m in quantizable_linears(model).values())
    codes = sum(m.packed.numel() for m in packed_modules(packed).values())
    n = sum(m.weight.numel() for m in quantizable_linears(model).values())
    assert codes == n * 2 // 8  # 64 input columns: no row padding
    assert owned < 0.35 * fp16  # 2-bit codes + per-row scale/zero + 5 % kept (fp16 + int32)


def test_dense_copy_is_independent(quantized):
    model, res = quantized
    packed = packed_model(model, res.layers)
    dense = dense_copy(packed)
    assert not packed_modules(dense)
    assert dense.model.embed_tokens.weight is not model.model.embed_tokens.weight
    dense.to(torch.float16)  # must not touch the shared originals
    assert model.model.embed_tokens.weight.dtype == torch.float32
    ids = _batches()[0].input_ids
    with torch.no_grad():
        torch.testing.assert_close(
            dense.float()(input_ids=ids).logits, packed(input_ids=ids).logits, atol=5e-2, rtol=0
        )


@pytest.mark.parametrize("group_size", [None, 8])
@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_compiled_one_token_path_equals_the_dequantized_one(group_size):
    """Chat decoding reads the packed codes in a compiled kernel; kept weights included."""
    from tacq.formats.packed import use_compiled_decoding

    lq = _layer(3, group_size, keep=0.1, seed=2)
    mod = PackedLinear.from_layer(lq, bias=torch.nn.Parameter(torch.randn(6)))
    x = torch.randn(1, 1, 40)
    want = torch.nn.functional.linear(x, lq.dequantize(), mod.bias)
    try:
        use_compiled_decoding(True)
        got = mod(x)
        many = mod(torch.randn(1, 3, 40))  # more than one token: the dequantize path
    finally:
        use_compiled_decoding(False)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert many.shape == (1, 3, 6)


def test_variant_reports_what_it_holds(tiny_lm, tiny_task):
    from tacq.circuit.select import Selection
    from tacq.memory import packed_estimate, resident_bytes
    from tacq.study.workflow import Study

    study = Study(tiny_lm, tiny_task)
    study.collect()
    v = study.quantize(Recipe.of(Selection("tacq", 2, 0.02)))
    own = sum(
        b.numel() * b.element_size() for m in packed_modules(v.model).values() for b in m.buffers()
    )
    assert v.resident_bytes == own == resident_bytes(v.model, tiny_lm.model)
    assert resident_bytes(v.model) > own  # counted alone, it holds the shared tensors too
    estimate = packed_estimate(tiny_lm.model, 2, 0.02, None)
    assert abs(estimate - own) <= 0.02 * own


@pytest.mark.parametrize("kind", ["haar", "hadamard"])
def test_room_estimate_counts_the_rotations_held(tiny_lm, tiny_task, kind):
    """A rotated variant holds each Linear's R (dense Haar: n^2 fp32 per Linear, 520 MB on
    SmolLM2); the room check's estimate grows by exactly the bytes those buffers take."""
    from tacq.circuit.select import Selection
    from tacq.memory import packed_estimate, resident_bytes, rotation_bytes
    from tacq.models import quantizable_linears
    from tacq.study.workflow import Study

    study = Study(tiny_lm, tiny_task)
    study.collect()
    v = study.quantize(Recipe.of(Selection("tacq", 2, 0.02), rotation=kind))
    held = {}  # distinct storages of the rotation buffers, as resident_bytes counts them
    for m in packed_modules(v.model).values():
        for t in (m.rot_signs, m.rot_mix, m.rot_hadamard):
            held[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    plain = packed_estimate(tiny_lm.model, 2, 0.02, None)
    rotated = packed_estimate(tiny_lm.model, 2, 0.02, None, rotation=kind)
    assert rotated - plain == rotation_bytes(tiny_lm.model, kind) == sum(held.values())
    if kind == "haar":  # n^2 + n signs + a 1 x 1 Hadamard, fp32, per Linear
        ns = [lin.weight.shape[1] for lin in quantizable_linears(tiny_lm.model).values()]
        assert rotated - plain == sum(4 * (n * n + n + 1) for n in ns)
    own = resident_bytes(v.model, tiny_lm.model)
    assert abs(rotated - own) <= 0.02 * own
    assert packed_estimate(tiny_lm.model, 2, 0.02, None, rotation=None) == plain


def test_dense_haar_variant_is_refused_when_its_rotations_do_not_fit(
    tiny_lm, tiny_task, monkeypatch
):
    """A budget the Hadamard variant fits in but the dense Haar one (n^2 floats per Linear,
    counted twice: the quantization's hooks and the variant) does not: a message, no work."""
    from tacq.circuit.select import Selection
    from tacq.errors import TacqError
    from tacq.memory import dense_linear_bytes, packed_estimate, rotation_bytes
    from tacq.study.workflow import Study

    m = tiny_lm.model
    sel = Selection("tacq", 2, 0.02)
    need = {
        k: packed_estimate(m, 2, 0.02, None, k) + dense_linear_bytes(m) + rotation_bytes(m, k)
        for k in ("hadamard", "haar")
    }
    budget = 1.25 * (need["hadamard"] + need["haar"]) / 2  # between the two
    assert 1.25 * need["hadamard"] < budget < 1.25 * need["haar"]
    study = Study(tiny_lm, tiny_task)
    study.collect()
    monkeypatch.setenv("TACQ_MEMORY_BUDGET_MB", str(budget / 2**20))
    with pytest.raises(TacqError, match="Not enough memory for a packed quantized variant"):
        study.quantize(Recipe.of(sel, rotation="haar"))
    assert study.quantize(Recipe.of(sel, rotation="hadamard")).spec.rotation == "hadamard"


def test_bf16_activations_meet_exact_weights():
    """On a bf16 model (CUDA) the weight is not rounded to bf16: fp32 matmul, output cast."""
    lq = _layer(2, None, keep=0.1, seed=3)
    mod = PackedLinear.from_layer(lq)
    x = torch.randn(2, 40).bfloat16()
    exact = torch.nn.functional.linear(x.float(), lq.dequantize()).bfloat16()
    rounded = torch.nn.functional.linear(x, lq.dequantize().bfloat16())
    assert torch.equal(mod(x), exact) and mod(x).dtype == torch.bfloat16
    assert not torch.equal(exact, rounded)  # what casting the weight would have given


def _rotated_packed(kind: str, group_size: int | None):
    """A 3-bit layer with kept weights, its codes on a rotated grid, packed with a bias."""
    lq = _layer(3, group_size, keep=0.1, seed=4)
    lq.rotation = (kind, 11)
    mod = PackedLinear.from_layer(lq, bias=torch.nn.Parameter(torch.randn(6)))
    return lq, mod, lq.dequantize()


@pytest.mark.parametrize("kind", ["haar", "hadamard"])
@pytest.mark.parametrize("group_size", [None, 8])
def test_rotated_packed_linear_computes_its_dequantized_weight(kind, group_size):
    """Codes of W_r R: the forward rotates x for the grid and adds the kept weights on x."""
    lq, mod, W = _rotated_packed(kind, group_size)
    assert torch.equal(mod.dequantize(), W)
    plain = _layer(3, group_size, keep=0.1, seed=4).dequantize()
    assert not torch.allclose(W, plain, atol=1e-2)  # the rotation is not a no-op
    # kept weights add to the rotated grid's value at their place, not replace it
    assert not torch.allclose(W[lq.keep_mask], lq.kept_values.float(), atol=1e-3)
    assert mod.layer().rotation == (kind, 11) and "rotation=" in repr(mod)
    x = torch.randn(2, 3, 40)
    want = torch.nn.functional.linear(x, W, mod.bias)
    torch.testing.assert_close(mod(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # compiles the decoding kernel
@pytest.mark.parametrize("kind", ["haar", "hadamard"])
@pytest.mark.parametrize("group_size", [None, 8])
def test_rotated_packed_kernel_decodes_one_token(kind, group_size):
    """One token goes through the compiled kernel, which adds the kept weights once."""
    from tacq.formats.packed import use_compiled_decoding

    lq, mod, W = _rotated_packed(kind, group_size)
    one = torch.randn(1, 1, 40)
    try:
        use_compiled_decoding(True)
        got = mod(one)
    finally:
        use_compiled_decoding(False)
    torch.testing.assert_close(
        got, torch.nn.functional.linear(one, W, mod.bias), atol=1e-5, rtol=1e-5
    )
    # the one token went through the kernel (kept weights added, not replacing), once
    calls = []

    def spy(*args):
        calls.append(args[-1])
        return packed_matvec(*args)

    with mock.patch.dict(packed_mod._DECODE, {"compiled": True, "fn": spy}):
        torch.testing.assert_close(mod(one), got, atol=1e-5, rtol=1e-5)
    assert calls == [False]
