"""GPTQ as it ran before the fast path: one Linear at a time, six tensor ops per column,
whole block passes for each group's Hessians, no reused grid search.

The yardstick, outside the library: tests check that `tacq.quant.gptq` gives bit-identical
codes, scales, zeros and kept values, and `bench/speed.py` times both in one run, passing
`baseline_group` where the library takes a group quantizer
(`quantize_model(..., group_quantizer=baseline_group)`, `Study(group_quantizer=...)`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from tacq.formats.grid import GPTQConfig, LayerQuant, find_params, kept_in_fp16
from tacq.quant.gptq import inverse_hessian_cholesky, pack_result
from tacq.quant.quantize import group_hessians, quantize_group


def _column_loop(
    W: Tensor, Hinv: Tensor, M: Tensor, scale: Tensor, zero: Tensor, cfg: GPTQConfig
) -> Tensor:
    n = W.shape[1]
    Q = torch.zeros_like(W)
    has_kept = M.any(0).tolist()
    for i1 in range(0, n, cfg.block_size):
        i2 = min(i1 + cfg.block_size, n)
        W1, Hinv1 = W[:, i1:i2], Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            w, q = W1[:, i], Q[:, i1 + i]
            torch.div(w, scale, out=q)
            q.round_().add_(zero).clamp_(0, cfg.maxq).sub_(zero).mul_(scale)
            if has_kept[i1 + i]:
                kept = M[:, i1 + i]
                q[kept] = kept_in_fp16(w[kept])
            err = Err1[:, i]
            torch.sub(w, q, out=err).div_(Hinv1[i, i])
            W1[:, i:].addr_(err, Hinv1[i, i:], alpha=-1)
        W[:, i2:].addmm_(Err1, Hinv[i1:i2, i2:], alpha=-1)
    return Q


def gptq_matrix_baseline(W: Tensor, H: Tensor, M: Tensor | None, cfg: GPTQConfig) -> LayerQuant:
    """Masked GPTQ of one weight (out, in), the pre-fast-path way."""
    W = W.float().clone()
    M = torch.zeros_like(W, dtype=torch.bool) if M is None else M.to(W.device, torch.bool)
    H = H.float().clone()
    scale, zero = find_params(W, M, cfg)  # the search itself did not change
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = torch.where(M[:, dead], W[:, dead], 0.0)
    perm = None
    if cfg.act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H, M = W[:, perm], H[perm][:, perm], M[:, perm]
    Hinv = inverse_hessian_cholesky(H, cfg.damp)
    Q = _column_loop(W, Hinv, M, scale, zero, cfg)
    hdiag = torch.diag(Hinv).clone()
    if perm is not None:
        inv = torch.argsort(perm)
        Q, M, hdiag = Q[:, inv], M[:, inv], hdiag[inv]
    return pack_result(Q, M, scale, zero, cfg.bits, hdiag)


def baseline_group(
    members: dict[str, nn.Linear],
    inputs: list,
    cfg: GPTQConfig,
    keep_masks: Mapping[str, Tensor] | None,
    unmasked: dict | None,
    block: nn.Module,
) -> dict[str, tuple[LayerQuant, float]]:
    """A `tacq.quant.quantize.GroupQuantizer` the old way: whole block passes for the
    Hessians, then each Linear on its own with its own search (`unmasked` is not reused)."""
    if cfg.method == "rtn":  # round to nearest has no old path
        return quantize_group(members, inputs, cfg, keep_masks, unmasked, block)
    masks = keep_masks or {}
    out: dict[str, tuple[LayerQuant, float]] = {}
    for shared in group_hessians(block, members, inputs, stop_early=False):
        for name in shared.names:
            t = time.perf_counter()
            W = members[name].weight.data
            out[name] = (
                gptq_matrix_baseline(W, shared.H, masks.get(name), cfg),
                time.perf_counter() - t,
            )
    return out
