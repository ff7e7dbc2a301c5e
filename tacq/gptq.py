"""Masked GPTQ (TaCQ): kept weights stay in 16 bits, the rest is quantized per channel.

Matrix functions are pure (weight + Hessian + mask in, codes and qparams out); the model
walker `quantize_model` catches block inputs, collects each sequential group's Hessians in
one calibration pass and calls them. Follows the GPTQ paper and TaCQ's official code, with
two fixes: under act-order the mask is permuted with the columns, and a dead column
(diag(H) = 0) keeps its kept weights instead of zeroing them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from tacq.errors import TacqError

log = logging.getLogger(__name__)

# True-sequential order inside a decoder block (TaCQ / GPTQ llama.py).
SEQUENTIAL_GROUPS = (
    ("k_proj", "v_proj", "q_proj"),
    ("o_proj",),
    ("up_proj", "gate_proj"),
    ("down_proj",),
)
METHODS = ("gptq", "rtn")


@dataclass(frozen=True)
class GPTQConfig:
    bits: int = 3
    method: str = "gptq"  # 'gptq' (Hessian error compensation) or 'rtn' (round to nearest)
    block_size: int = 128  # columns per lazy-update block
    damp: float = 0.01  # added to diag(H), as a fraction of its mean; x10 on each retry
    grid: int = 100  # mse scale search: number of shrink steps per unit
    max_shrink: float = 0.8  # search shrink factors 1 .. 1 - max_shrink
    norm: float = 2.4  # error norm of the mse scale search
    act_order: bool = False  # quantize columns by decreasing diag(H)
    version: int = 1

    def __post_init__(self) -> None:
        if self.bits not in (2, 3, 4):
            raise TacqError(f"Bit width must be 2, 3 or 4 (got {self.bits}).")
        if self.method not in METHODS:
            raise TacqError(f"Method must be one of {METHODS} (got {self.method!r}).")
        if not 0 < self.damp < 10:
            raise TacqError(f"Damping must be in (0, 10) (got {self.damp}).")

    @property
    def maxq(self) -> int:
        return 2**self.bits - 1


@dataclass
class LayerQuant:
    """One quantized Linear: what export writes and what dequantization needs."""

    codes: Tensor  # (out, in) uint8 in [0, 2^bits)
    scale: Tensor  # (out,) fp32
    zero: Tensor  # (out,) fp32, integer valued
    keep_mask: Tensor  # (out, in) bool: weights kept in 16 bits
    kept_values: Tensor  # (k,) fp16, row-major order of keep_mask
    bits: int
    hinv_diag: Tensor | None = None  # (in,) diag of the inverse-Hessian Cholesky (SpQR-like)

    def dequantize(self) -> Tensor:
        """W_q (out, in) fp32: grid values, with kept weights put back."""
        W_q = self.scale[:, None] * (self.codes.float() - self.zero[:, None])
        W_q[self.keep_mask] = self.kept_values.float()
        return W_q


# ---------------------------------------------------------------- number format


def quantize_to_grid(x: Tensor, scale: Tensor, zero: Tensor, maxq: int) -> tuple[Tensor, Tensor]:
    """Asymmetric uniform quantization: codes and dequantized values (broadcast qparams)."""
    codes = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return codes, scale * (codes - zero)


def _minmax_params(xmin: Tensor, xmax: Tensor, maxq: int) -> tuple[Tensor, Tensor]:
    scale = (xmax - xmin) / maxq
    return scale, torch.round(-xmin / scale)


def _grid_error(W: Tensor, scale: Tensor, zero: Tensor, cfg: GPTQConfig, buf: Tensor) -> Tensor:
    """Per-row sum |Q(W) - W|^norm for qparams (out, 1), computed in place in `buf`."""
    torch.div(W, scale, out=buf)
    buf.round_().add_(zero).clamp_(0, cfg.maxq).sub_(zero).mul_(scale).sub_(W)
    return buf.abs_().pow_(cfg.norm).sum(1)


def find_params(W: Tensor, M: Tensor | None, cfg: GPTQConfig) -> tuple[Tensor, Tensor]:
    """Per-row scale and zero (out,) by min/max, then an mse search over shrunk ranges.

    Kept entries (M) are first replaced by the row mean of the unkept ones, so outliers
    that stay in 16 bits do not stretch the grid. The scale is rounded to fp16, the
    precision export stores, so a reloaded model is bit-identical.
    """
    W = W.float()
    if M is not None and M.any():
        free = (~M).float()
        row_mean = (W * free).sum(1, keepdim=True) / free.sum(1, keepdim=True).clamp(min=1)
        W = torch.where(M, row_mean, W)
    xmin = W.min(1).values.clamp(max=0)
    xmax = W.max(1).values.clamp(min=0)
    flat = (xmin == 0) & (xmax == 0)
    xmin, xmax = torch.where(flat, -1.0, xmin), torch.where(flat, 1.0, xmax)
    scale, zero = _minmax_params(xmin, xmax, cfg.maxq)
    best = torch.full_like(xmin, float("inf"))
    buf = torch.empty_like(W)
    for i in range(int(cfg.max_shrink * cfg.grid)):
        p = 1 - i / cfg.grid
        s1, z1 = _minmax_params(p * xmin, p * xmax, cfg.maxq)
        err = _grid_error(W, s1[:, None], z1[:, None], cfg, buf)
        better = err < best
        best = torch.where(better, err, best)
        scale, zero = torch.where(better, s1, scale), torch.where(better, z1, zero)
    return scale.half().float(), zero


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


# ---------------------------------------------------------------- one matrix


def _kept(w: Tensor) -> Tensor:
    """A kept weight is stored in fp16: round it so export round-trips exactly."""
    return w.half().float()


def _column_loop(
    W: Tensor, Hinv: Tensor, M: Tensor, scale: Tensor, zero: Tensor, cfg: GPTQConfig
) -> Tensor:
    """GPTQ's lazy-batch column loop with a keep mask. W is updated in place. -> Q (out, in).

    q = Quant(w) where unkept, w where kept: kept weights add no error of their own but
    still receive the compensation of earlier columns.
    """
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
                q[kept] = _kept(w[kept])
            err = Err1[:, i]
            torch.sub(w, q, out=err).div_(Hinv1[i, i])
            W1[:, i:].addr_(err, Hinv1[i, i:], alpha=-1)
        W[:, i2:].addmm_(Err1, Hinv[i1:i2, i2:], alpha=-1)
    return Q


def _pack_result(
    Q: Tensor, M: Tensor, scale: Tensor, zero: Tensor, bits: int, hinv_diag: Tensor | None
) -> LayerQuant:
    """Codes recovered from the grid values (exact: Q = scale * (code - zero) off the mask)."""
    codes = torch.clamp(torch.round(Q / scale[:, None] + zero[:, None]), 0, 2**bits - 1)
    return LayerQuant(
        codes.to(torch.uint8), scale.float(), zero.float(), M.clone(), Q[M].half(), bits, hinv_diag
    )


def gptq_matrix(W: Tensor, H: Tensor, M: Tensor | None, cfg: GPTQConfig) -> LayerQuant:
    """Masked GPTQ of one weight (out, in) given H = 2 X X^T / n (in, in) and keep mask M."""
    W = W.float().clone()
    M = torch.zeros_like(W, dtype=torch.bool) if M is None else M.to(W.device, torch.bool)
    H = H.float().clone()
    scale, zero = find_params(W, M, cfg)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = torch.where(M[:, dead], W[:, dead], 0.0)  # fix: dead columns keep kept weights
    perm = None
    if cfg.act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H, M = W[:, perm], H[perm][:, perm], M[:, perm]  # fix: the mask moves too
    Hinv = inverse_hessian_cholesky(H, cfg.damp)
    Q = _column_loop(W, Hinv, M, scale, zero, cfg)
    hdiag = torch.diag(Hinv).clone()
    if perm is not None:
        inv = torch.argsort(perm)
        Q, M, hdiag = Q[:, inv], M[:, inv], hdiag[inv]
    return _pack_result(Q, M, scale, zero, cfg.bits, hdiag)


def rtn_matrix(W: Tensor, M: Tensor | None, cfg: GPTQConfig) -> LayerQuant:
    """Round-to-nearest on the same grid (mse-searched scale), kept weights in fp16."""
    W = W.float()
    M = torch.zeros_like(W, dtype=torch.bool) if M is None else M.to(W.device, torch.bool)
    scale, zero = find_params(W, M, cfg)
    _, Q = quantize_to_grid(W, scale[:, None], zero[:, None], cfg.maxq)
    Q = torch.where(M, _kept(W), Q)
    return _pack_result(Q, M, scale, zero, cfg.bits, None)


def hessian_error(W: Tensor, W_q: Tensor, H: Tensor) -> float:
    """tr((W - W_q) H (W - W_q)^T): the layer-output error GPTQ minimizes."""
    D = W.float() - W_q.float()
    return float(torch.einsum("oi,ij,oj->", D, H.float(), D))
