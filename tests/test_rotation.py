"""Rotated residual quantization: the rotation is orthogonal and repeatable, the hooked model
computes what the original does, kept weights stay exact, and on weights with outlier
columns the rotation lowers the error GPTQ leaves."""

from __future__ import annotations

import copy

import pytest
import torch

from tacq.errors import TacqError
from tacq.formats.grid import GPTQConfig, kept_in_fp16
from tacq.formats.orthogonal import Rotation, random_rotation, rotation_for, rotation_seed
from tacq.models import quantizable_linears
from tacq.quant.gptq import gptq_matrix, hessian_error
from tacq.quant.quantize import quantize_model
from tacq.quant.rotation import quantize_rotated, rotated_linears
from tests.test_quantize import _batches, _masks


def _logits(model, batches) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(input_ids=b.input_ids).logits.flatten() for b in batches])


def test_rotation_is_orthogonal_repeatable_and_differs_per_linear():
    R = random_rotation(48, seed=3)
    assert torch.allclose(R @ R.T, torch.eye(48), atol=1e-5)
    assert torch.equal(R, random_rotation(48, seed=3))
    up = "model.layers.0.mlp.up_proj"
    a, b = rotation_for(up, 48, 0).matrix(), rotation_for("q_proj", 48, 0).matrix()
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, rotation_for(up, 48, 1).matrix())


@pytest.mark.parametrize("n", [48, 64, 576])
@pytest.mark.parametrize("kind", ["haar", "hadamard"])
def test_rotation_apply_and_unapply_are_the_matrix_and_its_transpose(n, kind):
    rot = Rotation.draw(n, seed=7, kind=kind)
    R = rot.matrix()
    assert torch.allclose(R @ R.T, torch.eye(n), atol=1e-5)
    x = torch.randn(2, 5, n)
    assert torch.allclose(rot.apply(x), x @ R, atol=1e-5)
    assert torch.allclose(rot.unapply(x), x @ R.T, atol=1e-5)
    assert torch.allclose(rot.unapply(rot.apply(x)), x, atol=1e-5)
    if kind == "hadamard":  # 576 = 9 x 64: a 9 x 9 mix, not a dense 576 x 576 one
        assert (R.abs() > 1e-6).all()  # still every input reaches every output
        assert rot.mix.shape[0] == n // (n & -n) and rot.hadamard.shape[0] == n & -n
        assert set(rot.signs.tolist()) == {-1.0, 1.0}
        assert torch.equal(R, Rotation.draw(n, seed=7, kind=kind).matrix())


def test_unknown_rotation_kind_is_refused():
    with pytest.raises(TacqError, match="Unknown rotation"):
        Rotation.draw(8, 0, "givens")


@pytest.mark.parametrize("kind", ["haar", "hadamard"])
def test_hooked_model_computes_the_original_and_is_restored(tiny_llama, kind):
    batches, masks = _batches(), _masks(tiny_llama)
    before = {n: p.clone() for n, p in tiny_llama.state_dict().items()}
    # the kept weights are rounded to fp16 inside, as stored: compare with that model
    reference = copy.deepcopy(tiny_llama)
    for name, lin in quantizable_linears(reference).items():
        W = lin.weight.data
        lin.weight.data = torch.where(masks[name], kept_in_fp16(W), W)
    want = _logits(reference, batches)
    with rotated_linears(tiny_llama, masks, seed=0, kind=kind) as kept:
        q = tiny_llama.get_submodule("model.layers.0.self_attn.q_proj")
        assert not torch.allclose(q.weight, before["model.layers.0.self_attn.q_proj.weight"])
        assert torch.equal(kept["model.layers.0.self_attn.q_proj"] != 0, masks[q_name()])
        got = _logits(tiny_llama, batches)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert got.std() > 0.1  # a real comparison, not two constant tensors
    for n, p in tiny_llama.state_dict().items():
        assert torch.equal(p, before[n]), n
    for lin in quantizable_linears(tiny_llama).values():
        assert not lin._forward_hooks and not lin._forward_pre_hooks


def q_name() -> str:
    return "model.layers.0.self_attn.q_proj"


def test_quantize_rotated_keeps_the_circuit_exact_and_the_model_unchanged(tiny_llama):
    batches, masks = _batches(), _masks(tiny_llama)
    before = {n: p.clone() for n, p in tiny_llama.state_dict().items()}
    res = quantize_rotated(tiny_llama, batches, GPTQConfig(bits=2), masks, seed=5)
    for n, p in tiny_llama.state_dict().items():
        assert torch.equal(p, before[n]), n
    assert res.kept == sum(int(m.sum()) for m in masks.values())
    W = before[q_name() + ".weight"]
    M = masks[q_name()]
    lq = res.layers[q_name()]
    assert torch.equal(lq.keep_mask, M) and lq.kept_values.dtype == torch.float16
    assert torch.equal(lq.kept_values.float(), kept_in_fp16(W[M]))
    assert lq.rotation == ("haar", rotation_seed(5, q_name()))
    dq = res.dequantized()
    assert set(dq) == set(masks) and dq[q_name()].shape == W.shape
    # W_k + Q(W_r R) R^T: the kept values add to the rotated residual's approximation
    R = rotation_for(q_name(), W.shape[1], 5)
    want = R.unapply(lq.grid())
    want[M] += lq.kept_values.float()
    assert torch.allclose(dq[q_name()], want, atol=1e-6)
    codes = lq.codes
    assert codes.max() <= 3 and codes.min() >= 0
    assert (dq[q_name()][~M] - W[~M]).abs().mean() < W.abs().mean()


def test_rotation_lowers_gptq_error_on_outlier_columns():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(64, 128, generator=g)
    W[:, [5, 77]] *= 25  # two outlier input channels stretch every row's grid
    X = torch.randn(512, 128, generator=g)
    H = 2 * X.T @ X / len(X)
    cfg = GPTQConfig(bits=3)
    plain = hessian_error(W, gptq_matrix(W, H, None, cfg).dequantize(), H)
    R = random_rotation(128, seed=0)
    Wq = gptq_matrix(W @ R, R.T @ H @ R, None, cfg).dequantize() @ R.T
    rotated = hessian_error(W, Wq, H)
    assert rotated < 0.6 * plain  # measured 0.46, (rotated, plain)


def test_rotated_model_is_closer_to_fp_with_outlier_weights(tiny_llama):
    with torch.no_grad():
        for lin in quantizable_linears(tiny_llama).values():
            lin.weight[:, :3] *= 20
    batches = _batches()
    want = _logits(tiny_llama, batches)
    cfg = GPTQConfig(bits=3)

    def error(dequantized) -> float:
        model = copy.deepcopy(tiny_llama)
        for name, W in dequantized.items():
            model.get_submodule(name).weight.data = W
        return float((_logits(model, batches) - want).pow(2).mean())

    plain = error(quantize_model(tiny_llama, batches, cfg).dequantized())
    rotated = error(quantize_rotated(tiny_llama, batches, cfg).dequantized())
    assert rotated < 0.7 * plain  # measured 0.35, (rotated, plain)
