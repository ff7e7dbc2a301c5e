"""Group-wise number format: GPTQ, masked GPTQ and RTN against naive references; export."""

from __future__ import annotations

import pytest
import torch

from tacq.formats.grid import GPTQConfig, find_group_params, find_params, kept_in_fp16
from tacq.formats.sizes import NumberFormat, linear_bytes, size_report
from tacq.quant.gptq import gptq_matrix, inverse_hessian_cholesky, rtn_matrix
from tacq.quant.recipe import Recipe


def _problem(out: int = 12, n: int = 96, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(4 * n, n, generator=g) * torch.linspace(0.2, 3, n)  # uneven columns
    H = 2 * X.T @ X / len(X)
    W = torch.randn(out, n, generator=g)
    W[3, 40] = 9.0  # an outlier that the mask keeps
    M = torch.zeros(out, n, dtype=torch.bool)
    M[3, 40] = M[7, 5] = M[0, 70] = True
    return W, H, M


def naive_group_gptq(W, H, M, cfg):
    """Textbook GPTQ one column at a time (no lazy blocks): each group's scale and zero are
    fitted when its first column comes up, on the weights as updated so far."""
    W, g = W.clone().float(), cfg.group_size
    Hinv = inverse_hessian_cholesky(H.float(), cfg.damp)
    Q = torch.zeros_like(W)
    S, Z = [], []
    for j in range(W.shape[1]):
        if j % g == 0:
            s, z = find_params(W[:, j : j + g], M[:, j : j + g], cfg)
            S.append(s)
            Z.append(z)
        q = torch.clamp(torch.round(W[:, j] / S[-1]) + Z[-1], 0, cfg.maxq)
        q = S[-1] * (q - Z[-1])
        Q[:, j] = torch.where(M[:, j], kept_in_fp16(W[:, j]), q)
        err = (W[:, j] - Q[:, j]) / Hinv[j, j]
        W[:, j:].addr_(err, Hinv[j, j:], alpha=-1)
    return Q, torch.stack(S, 1), torch.stack(Z, 1)


@pytest.mark.parametrize("group_size", [32, 64])
def test_masked_group_gptq_equals_the_textbook_loop(group_size):
    W, H, M = _problem()
    cfg = GPTQConfig(bits=2, group_size=group_size)
    lq = gptq_matrix(W, H, M, cfg)
    Q, S, Z = naive_group_gptq(W, H, M, cfg)
    assert lq.scale.shape == (12, -(-96 // group_size))  # a shorter last group at 64
    assert torch.equal(lq.scale, S) and torch.equal(lq.zero, Z)
    assert torch.equal(lq.dequantize(), Q)


def test_groups_spanning_blocks_refit_on_updated_weights():
    """g = 256 > block 128: blocks widen to whole groups, so each group is fitted on fully
    updated weights, as in the textbook loop (up to float summation order)."""
    W, H, M = _problem(out=8, n=512, seed=1)
    cfg = GPTQConfig(bits=3, group_size=256)
    lq = gptq_matrix(W, H, M, cfg)
    Q, S, _ = naive_group_gptq(W, H, M, cfg)
    torch.testing.assert_close(lq.scale, S, rtol=1e-3, atol=0)
    same = (lq.dequantize() == Q).float().mean()
    assert same > 0.99, same


def test_groups_beat_per_channel_and_ignore_kept_outliers():
    W, H, M = _problem()
    per_channel = gptq_matrix(W, H, M, GPTQConfig(bits=2)).dequantize()
    grouped = gptq_matrix(W, H, M, GPTQConfig(bits=2, group_size=32)).dequantize()
    err = lambda Wq: float(torch.einsum("oi,ij,oj->", W - Wq, H, W - Wq))  # noqa: E731
    assert err(grouped) < err(per_channel)
    free = gptq_matrix(W, H, None, GPTQConfig(bits=2, group_size=32))
    kept = gptq_matrix(W, H, M, GPTQConfig(bits=2, group_size=32))
    assert free.scale[3, 1] > 2 * kept.scale[3, 1]  # the 9.0 no longer stretches its group


def test_rtn_groups_and_static_groups_fit_on_the_original_order():
    W, H, M = _problem()
    cfg = GPTQConfig(bits=3, group_size=32)
    lq = rtn_matrix(W, M, cfg)
    S, Z = find_group_params(W, M, cfg)
    assert torch.equal(lq.scale, S) and torch.equal(lq.zero, Z)
    cols = torch.arange(96) // 32
    want = torch.clamp(torch.round(W / S[:, cols]) + Z[:, cols], 0, 7)
    assert torch.equal(lq.codes[~M].float(), want[~M])
    act = gptq_matrix(W, H, M, GPTQConfig(bits=3, group_size=32, act_order=True))
    assert torch.equal(act.scale, S)  # static groups: fitted up front, original columns
    assert torch.equal(act.keep_mask, M)


def test_group_export_round_trips_and_counts_its_scales(tmp_path, tiny_lm, tiny_task):
    from tacq.circuit.select import Selection
    from tacq.formats.export import save_packed
    from tacq.quant.variant import load_variant
    from tacq.study.workflow import Study
    from tests.tiny import fp16_exact

    fp16_exact(tiny_lm.model)
    study = Study(tiny_lm, tiny_task)
    study.collect()
    v = study.quantize(Recipe.of(Selection("tacq", 2, 0.01, group_size=32)))
    assert v.name == "tacq-2bit-g32-1.00%" and v.spec.group_size == 32
    per_channel = study.size_at(Selection("tacq", 2, 0.01))
    shapes = [tuple(lq.codes.shape) for lq in v.result.layers.values()]
    # an fp16 scale (2 bytes) and a 2-bit zero (1/4 byte) per row or per group
    assert per_channel.qparam_bytes == sum(o * 9 // 4 for o, _ in shapes)
    assert v.size.qparam_bytes == sum(o * -(-i // 32) * 9 // 4 for o, i in shapes)  # per group
    assert v.size.bpw_honest > per_channel.bpw_honest and v.size.bpw_paper == per_channel.bpw_paper
    save_packed(tmp_path / "g", tiny_lm, v)
    back = load_variant(tmp_path / "g")
    assert back.spec == v.spec and back.size == v.size
    for name, lq in v.result.layers.items():
        assert torch.equal(back.result.layers[name].dequantize(), lq.dequantize()), name
    ids = torch.tensor([[5, 17, 33, 60, 2, 90]])
    with torch.no_grad():
        assert torch.equal(back.model(ids).logits, v.model(ids).logits)


def test_honest_bytes_count_every_stored_part():
    fmt = NumberFormat(bits=2, group_size=128)
    code, qparam, kept = linear_bytes(576, 1536, 10, fmt)
    assert code == 576 * 1536 * 2 // 8
    assert qparam == 576 * 12 * 2 + 576 * 12 // 4  # 1536 / 128 groups, fp16 scale + 2-bit zero
    assert kept == 10 * 4 + 576 * 2  # fp16 value + int16 column each, a uint16 count per row
    hqq_like = NumberFormat(bits=2, group_size=64, zero_bytes=2)  # fp16 zeros
    assert linear_bytes(576, 576, 0, hqq_like)[1] == 576 * 9 * 4
    rep = size_report([(576, 576)], [0], 2, 0, group_size=128)
    assert rep.bpw_honest == pytest.approx(2 + 8 * 576 * 5 * 2.25 / 576**2)  # 576/128: 5 groups
