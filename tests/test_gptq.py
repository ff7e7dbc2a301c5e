"""Masked GPTQ on small matrices against an independent, unblocked reference."""

from __future__ import annotations

import pytest
import torch

from tacq.errors import TacqError
from tacq.formats.grid import GPTQConfig, find_params
from tacq.quant.gptq import gptq_matrix, hessian_error, inverse_hessian_cholesky, rtn_matrix


@pytest.fixture
def weight_and_hessian():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(24, 40, generator=g).half().float()  # fp16-representable
    X = torch.randn(400, 40, generator=g) @ torch.randn(40, 40, generator=g) * 0.3
    H = 2 * X.T @ X / X.shape[0]
    return W, H


def reference_gptq(W, H, M, cfg):
    """Textbook GPTQ, one column at a time, no lazy blocks: written apart from tacq's loop."""
    W = W.clone().float()
    scale, zero = find_params(W, M, cfg)
    Hinv = inverse_hessian_cholesky(H.clone(), cfg.damp)
    Q = torch.zeros_like(W)
    for j in range(W.shape[1]):
        w = W[:, j]
        q = scale * (torch.clamp(torch.round(w / scale) + zero, 0, cfg.maxq) - zero)
        q = torch.where(M[:, j], w.half().float(), q)
        Q[:, j] = q
        err = (w - q) / Hinv[j, j]
        W[:, j:] -= torch.outer(err, Hinv[j, j:])
    return Q


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_masked_gptq_matches_reference(bits, weight_and_hessian):
    W, H = weight_and_hessian
    cfg = GPTQConfig(bits=bits, block_size=16)
    M = torch.zeros_like(W, dtype=torch.bool)
    plain = gptq_matrix(W, H, None, cfg).dequantize()
    torch.testing.assert_close(plain, reference_gptq(W, H, M, cfg), rtol=1e-4, atol=1e-5)
    M = torch.rand(W.shape, generator=torch.Generator().manual_seed(2)) < 0.05
    masked = gptq_matrix(W, H, M, cfg).dequantize()
    torch.testing.assert_close(masked, reference_gptq(W, H, M, cfg), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_kept_weights_exact_and_rest_on_grid(bits, weight_and_hessian):
    W, H = weight_and_hessian
    cfg = GPTQConfig(bits=bits)
    M = torch.zeros_like(W, dtype=torch.bool)
    M[0] = True  # keep a whole row: it never receives error, so it comes back unchanged
    M[3, 5] = M[7, 0] = True
    lq = gptq_matrix(W, H, M, cfg)
    Q = lq.dequantize()
    assert torch.equal(Q[0], W[0])
    assert torch.equal(Q[7, 0], W[7, 0])  # first column: nothing compensated into it yet
    assert torch.isfinite(Q).all()
    # unkept weights lie on their row's grid: scale * (code - zero) with integer codes
    codes = Q / lq.scale[:, None] + lq.zero[:, None]
    free = ~M
    assert torch.allclose(codes[free], codes[free].round(), atol=1e-3)
    assert codes[free].min() >= -1e-3 and codes[free].max() <= cfg.maxq + 1e-3


def test_gptq_beats_rtn_on_hessian_error(weight_and_hessian):
    W, H = weight_and_hessian
    for bits in (2, 3, 4):
        cfg = GPTQConfig(bits=bits)
        e_gptq = hessian_error(W, gptq_matrix(W, H, None, cfg).dequantize(), H)
        e_rtn = hessian_error(W, rtn_matrix(W, None, cfg).dequantize(), H)
        assert e_gptq < e_rtn


def test_keeping_weights_lowers_error(weight_and_hessian):
    W, H = weight_and_hessian
    cfg = GPTQConfig(bits=2)
    dW = W - gptq_matrix(W, H, None, cfg).dequantize()
    M = dW.abs() >= dW.abs().flatten().kthvalue(int(0.9 * dW.numel())).values
    e_plain = hessian_error(W, gptq_matrix(W, H, None, cfg).dequantize(), H)
    e_masked = hessian_error(W, gptq_matrix(W, H, M, cfg).dequantize(), H)
    assert e_masked < e_plain


def test_dead_column_keeps_kept_weights(weight_and_hessian):
    W, H = weight_and_hessian
    H = H.clone()
    H[4, :] = 0
    H[:, 4] = 0  # input feature 4 is always zero: a dead column
    M = torch.zeros_like(W, dtype=torch.bool)
    M[2, 4] = True
    Q = gptq_matrix(W, H, M, GPTQConfig(bits=3)).dequantize()
    assert Q[2, 4] == W[2, 4]  # official code would zero it
    assert torch.all(Q[torch.arange(W.shape[0]) != 2, 4] == 0)


def test_act_order_permutes_mask(weight_and_hessian):
    W, H = weight_and_hessian
    M = torch.zeros_like(W, dtype=torch.bool)
    M[:, 7] = True
    lq = gptq_matrix(W, H, M, GPTQConfig(bits=2, act_order=True))
    assert torch.equal(lq.keep_mask, M)
    Q = lq.dequantize()
    assert torch.isfinite(Q).all()
    plain = gptq_matrix(W, H, None, GPTQConfig(bits=2, act_order=True)).dequantize()
    assert not torch.equal(Q[:, 7], plain[:, 7])


def test_masked_entries_do_not_stretch_grid():
    W = torch.randn(4, 32, generator=torch.Generator().manual_seed(0)) * 0.1
    W[0, 3] = 50.0  # a huge outlier
    M = torch.zeros_like(W, dtype=torch.bool)
    M[0, 3] = True
    cfg = GPTQConfig(bits=3)
    s_masked, _ = find_params(W, M, cfg)
    s_plain, _ = find_params(W, None, cfg)
    assert s_masked[0] < s_plain[0] / 20
    assert torch.equal(s_masked[1:], s_plain[1:])


def test_config_rejects_bad_bits():
    with pytest.raises(TacqError, match="2, 3 or 4"):
        GPTQConfig(bits=5)


def _stepwise_search(W, cfg):
    """The mse search one shrink step at a time, written apart from find_params: per row,
    the first step with the least sum |Q(W) - W|^norm wins."""
    xmin, xmax = W.min(1).values.clamp(max=0), W.max(1).values.clamp(min=0)
    flat = (xmin == 0) & (xmax == 0)
    xmin, xmax = torch.where(flat, -1.0, xmin), torch.where(flat, 1.0, xmax)
    scale = (xmax - xmin) / cfg.maxq
    zero = torch.round(-xmin / scale)
    best = torch.full_like(xmin, float("inf"))
    for i in range(int(cfg.max_shrink * cfg.grid)):
        p = 1 - i / cfg.grid
        s = (p * xmax - p * xmin) / cfg.maxq
        z = torch.round(-(p * xmin) / s)
        q = s[:, None] * (
            torch.clamp(torch.round(W / s[:, None]) + z[:, None], 0, cfg.maxq) - z[:, None]
        )
        err = (q - W).abs().pow(cfg.norm).sum(1)
        better = err < best
        best, scale, zero = (
            torch.where(better, a, b) for a, b in ((err, best), (s, scale), (z, zero))
        )
    return scale.half().float(), zero


@pytest.mark.parametrize("shape", [(6, 5), (24, 40), (96, 700)])
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("cap", [1 << 20, 100])  # (96, 700): 6 chunks of 15 steps; 100: 1 step
def test_search_of_all_steps_at_once_equals_the_stepwise_search(shape, bits, cap, monkeypatch):
    import tacq.formats.grid as grid

    monkeypatch.setattr(grid, "_SEARCH_ELEMENTS", cap)
    g = torch.Generator().manual_seed(bits)
    W = torch.randn(*shape, generator=g) * torch.rand(shape[0], 1, generator=g)
    W[0] = 0  # a flat row: every step ties, the first (no shrink) wins
    W[1, 1:] = 0.25  # few distinct values: ties between steps
    W[2, -1] = float("nan")  # a damaged row: no step is better than min/max's
    cfg = GPTQConfig(bits=bits)
    got, want = find_params(W, None, cfg), _stepwise_search(W, cfg)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
