"""Masked GPTQ (TaCQ): kept weights stay in 16 bits, the rest is quantized per channel
(one scale and zero per output row, as the paper) or per group of input columns.

Matrix functions are pure (weight + Hessian + mask in, codes and qparams out); the model
walker `quantize_model` catches block inputs, collects each sequential group's Hessians in
one calibration pass and calls them. Follows the GPTQ paper and TaCQ's official code, with
two fixes: under act-order the mask is permuted with the columns, and a dead column
(diag(H) = 0) keeps its kept weights instead of zeroing them.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tacq.errors import TacqError
from tacq.formats.grid import (
    GPTQConfig,
    LayerQuant,
    QParams,
    find_group_params,
    find_params,
    kept_in_fp16,
    n_groups,
    per_column,
    quantize_to_grid,
)

log = logging.getLogger(__name__)


def inverse_hessian_cholesky(H: Tensor, damp: float, retries: int = 4) -> Tensor:
    """Upper Cholesky factor of (H + damp*mean(diag H) I)^-1; more damping on failure."""
    mean_diag = torch.diag(H).mean()
    for attempt in range(retries):
        Hd = H.clone()
        Hd.diagonal().add_(damp * 10**attempt * mean_diag)
        L, info = torch.linalg.cholesky_ex(Hd)
        if info == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if info == 0:
                if attempt:
                    log.warning("Hessian needed damping %.3g to factor.", damp * 10**attempt)
                return U
    raise TacqError(
        "The Hessian could not be factored even with heavy damping; use more calibration examples."
    )


@dataclass
class Groups:
    """Group-wise qparams for the column loop, filled in as it goes (or fitted up front).

    scale, zero: (out, groups). static: fitted before the loop on the original column
    order (act-order; perm maps loop position -> original column), so no column-to-group
    index is stored. Otherwise each group is fitted when the loop reaches its first column,
    on the weights as GPTQ has updated them so far (the reference GPTQ's groupsize).
    """

    scale: Tensor
    zero: Tensor
    size: int
    static: bool = False
    perm: list[int] | None = None

    @classmethod
    def start(cls, W: Tensor, M: Tensor, cfg: GPTQConfig) -> Groups:
        """Static groups fitted now (act-order); otherwise empty, filled in by the loop."""
        if cfg.act_order:
            return cls(*find_group_params(W, M, cfg), cfg.group_size, static=True)
        empty = W.new_zeros(W.shape[0], n_groups(W.shape[1], cfg.group_size))
        return cls(empty, empty.clone(), cfg.group_size)

    def at(self, col: int, W: Tensor, M: Tensor, cfg: GPTQConfig) -> int:
        """The group of loop column `col`, fitting it first when it starts there."""
        if self.static:
            return (self.perm[col] if self.perm is not None else col) // self.size
        g = col // self.size
        if col % self.size == 0:
            end = col + self.size
            self.scale[:, g], self.zero[:, g] = find_params(W[:, col:end], M[:, col:end], cfg)
        return g


def _column_loop(
    W: Tensor,
    Hinv: Tensor,
    M: Tensor,
    scale: Tensor,
    zero: Tensor,
    cfg: GPTQConfig,
    row_splits: list[int] | None = None,
    groups: Groups | None = None,
) -> Tensor:
    """GPTQ's lazy-batch column loop with a keep mask. W is updated in place. -> Q (out, in).

    q = Quant(w) where unkept, w where kept: kept weights add no error of their own but
    still receive the compensation of earlier columns.

    The loop is bound by per-op overhead, not arithmetic: column views come from one
    `unbind` per block, q and err live in contiguous rows (a strided column makes each op
    slower), and the grid takes 4 ops per column, not 6: clamp(round(w/s), -z, maxq - z)
    * s equals (clamp(round(w/s) + z, 0, maxq) - z) * s exactly (small integers add
    exactly in fp32). The rank-1 update keeps the textbook loop's tensor geometry, because
    its kernel fuses multiply-add in the vectorized part of a row and not in the tail; so
    results are bit-identical to the yardstick (bench/gptq_yardstick.py). row_splits: row
    counts of stacked layers (see gptq_stacked). groups: group-wise qparams (then scale and zero are unused);
    blocks then hold whole groups, so a group is fitted on fully updated weights.
    """
    rows, n = W.shape
    Q = torch.empty_like(W)
    lo, hi = (None, None) if groups is not None else (-zero, cfg.maxq - zero)
    has_kept = M.any(0).tolist()
    hinv_diag = torch.diagonal(Hinv).tolist()
    bounds = _row_bounds(row_splits or [rows])
    block = cfg.block_size if groups is None else math.lcm(cfg.block_size, groups.size)
    group = -1
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        W1, Hinv1 = W[:, i1:i2], Hinv[i1:i2, i1:i2]
        Q1 = torch.empty(i2 - i1, rows, dtype=W.dtype, device=W.device)  # row i: column i1 + i
        Err1 = torch.empty_like(Q1)
        columns = zip(W1.unbind(1), Q1.unbind(0), Err1.unbind(0), Hinv1.unbind(0))
        for i, (w, q, err, h) in enumerate(columns):
            if groups is not None and (g := groups.at(i1 + i, W, M, cfg)) != group:
                group, scale = g, groups.scale[:, g]
                lo, hi = -groups.zero[:, g], cfg.maxq - groups.zero[:, g]
            torch.div(w, scale, out=q)
            q.round_().clamp_(lo, hi).mul_(scale)
            if has_kept[i1 + i]:
                torch.where(M[:, i1 + i], kept_in_fp16(w), q, out=q)
            torch.sub(w, q, out=err).div_(hinv_diag[i1 + i])
            if i == 0 and i2 - i1 == n and len(bounds) > 1:
                # W1 is all of W: each layer's block is contiguous and its kernel runs on
                # it flat, so update layer by layer to keep the per-layer rounding.
                for r0, r1 in bounds:
                    W1[r0:r1].addr_(err[r0:r1], h, alpha=-1)
            else:
                W1[:, i:].addr_(err, h[i:], alpha=-1)
        Q[:, i1:i2] = Q1.T
        if i2 < n:
            Err = Err1.T.contiguous()  # (rows, cols), as the per-layer matmul reads it
            for r0, r1 in bounds:  # the per-layer matmul shapes, so BLAS sums alike
                W[r0:r1, i2:].addmm_(Err[r0:r1], Hinv[i1:i2, i2:], alpha=-1)
    return Q


def _row_bounds(row_splits: list[int]) -> list[tuple[int, int]]:
    ends = list(itertools.accumulate(row_splits))
    return [(e - r, e) for r, e in zip(row_splits, ends)]


def pack_result(
    Q: Tensor,
    M: Tensor,
    scale: Tensor,
    zero: Tensor,
    bits: int,
    hinv_diag: Tensor | None,
    group_size: int | None = None,
) -> LayerQuant:
    """Codes recovered from the grid values (exact: Q = scale * (code - zero) off the mask)."""
    n = Q.shape[1]
    s, z = per_column(scale, n, group_size), per_column(zero, n, group_size)
    codes = torch.clamp(torch.round(Q / s + z), 0, 2**bits - 1)
    return LayerQuant(
        codes.to(torch.uint8),
        scale.float(),
        zero.float(),
        M.clone(),
        Q[M].half(),
        bits,
        hinv_diag,
        group_size,
    )


def gptq_matrix(
    W: Tensor, H: Tensor, M: Tensor | None, cfg: GPTQConfig, unmasked: QParams | None = None
) -> LayerQuant:
    """Masked GPTQ of one weight (out, in) given H = 2 X X^T / n (in, in) and keep mask M."""
    return gptq_stacked([W], H, [M], cfg, None if unmasked is None else [unmasked])[0]


def gptq_stacked(
    Ws: list[Tensor],
    H: Tensor,
    Ms: list[Tensor | None],
    cfg: GPTQConfig,
    unmasked: list[QParams] | None = None,
) -> list[LayerQuant]:
    """Masked GPTQ of Linears that read the same input (q/k/v; gate/up), so share one H.

    GPTQ's rows are independent given H: the weights are stacked row-wise and get one
    mse search, one Cholesky and one column loop, then are split again. Results are
    bit-identical to quantizing each weight on its own (tested).
    """
    rows = [w.shape[0] for w in Ws]
    W = torch.cat([w.float() for w in Ws]) if len(Ws) > 1 else Ws[0].float().clone()
    M = torch.cat(
        [
            torch.zeros_like(w, dtype=torch.bool) if m is None else m.to(w.device, torch.bool)
            for w, m in zip(Ws, Ms)
        ]
    )
    H = H.float().clone()
    dead = torch.diag(H) == 0
    if cfg.group_size is None:  # per row: fitted before dead columns are zeroed, as always
        base = None if unmasked is None else tuple(torch.cat(t) for t in zip(*unmasked))
        scale, zero = find_params(W, M, cfg, base)
    H[dead, dead] = 1
    W[:, dead] = torch.where(M[:, dead], W[:, dead], 0.0)  # fix: dead columns keep kept weights
    groups = None if cfg.group_size is None else Groups.start(W, M, cfg)  # original order
    if groups is not None:
        scale, zero = groups.scale, groups.zero
    perm = None
    if cfg.act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H, M = W[:, perm], H[perm][:, perm], M[:, perm]  # fix: the mask moves too
        if groups is not None:
            groups.perm = perm.tolist()
    Hinv = inverse_hessian_cholesky(H, cfg.damp)
    Q = _column_loop(W, Hinv, M, scale, zero, cfg, rows, groups)
    hdiag = torch.diag(Hinv).clone()
    if perm is not None:
        inv = torch.argsort(perm)
        Q, M, hdiag = Q[:, inv], M[:, inv], hdiag[inv]
    lq = pack_result(Q, M, scale, zero, cfg.bits, hdiag, cfg.group_size)
    return split_rows(lq, rows)


def split_rows(lq: LayerQuant, rows: list[int]) -> list[LayerQuant]:
    """Undo the stacking of gptq_stacked: one LayerQuant per layer, each owning its tensors."""
    if len(rows) == 1:
        return [lq]
    kept = lq.keep_mask.sum(1)
    kept_per_layer = [int(k.sum()) for k in kept.split(rows)]
    parts = zip(
        lq.codes.split(rows),
        lq.scale.split(rows),
        lq.zero.split(rows),
        lq.keep_mask.split(rows),
        lq.kept_values.split(kept_per_layer),
    )
    return [
        LayerQuant(
            c.clone(),
            s.clone(),
            z.clone(),
            m.clone(),
            v.clone(),
            lq.bits,
            None if lq.hinv_diag is None else lq.hinv_diag.clone(),
            lq.group_size,
        )
        for c, s, z, m, v in parts
    ]


def rtn_matrix(
    W: Tensor, M: Tensor | None, cfg: GPTQConfig, unmasked: QParams | None = None
) -> LayerQuant:
    """Round-to-nearest on the same grid (mse-searched scale), kept weights in fp16."""
    W = W.float()
    M = torch.zeros_like(W, dtype=torch.bool) if M is None else M.to(W.device, torch.bool)
    if cfg.group_size is None:
        scale, zero = find_params(W, M, cfg, unmasked)
    else:
        scale, zero = find_group_params(W, M, cfg)
    n = W.shape[1]
    s, z = per_column(scale, n, cfg.group_size), per_column(zero, n, cfg.group_size)
    _, Q = quantize_to_grid(W, s, z, cfg.maxq)
    Q = torch.where(M, kept_in_fp16(W), Q)
    return pack_result(Q, M, scale, zero, cfg.bits, None, cfg.group_size)


def hessian_error(W: Tensor, W_q: Tensor, H: Tensor) -> float:
    """tr((W - W_q) H (W - W_q)^T): the layer-output error GPTQ minimizes."""
    D = W.float() - W_q.float()
    return float(torch.einsum("oi,ij,oj->", D, H.float(), D))
