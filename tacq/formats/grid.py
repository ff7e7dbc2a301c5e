"""The number grid every layer shares: GPTQ's settings, a layer's codes and qparams
(`LayerQuant`), and the min/max + mse search that fits a scale and zero.

It sits below the circuit, the formats and the quantizers, which all read or write
codes on this grid; the GPTQ column walk itself is `tacq.quant.gptq`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tacq.errors import TacqError
from tacq.formats.orthogonal import stored_rotation

METHODS = ("gptq", "rtn")
QParams = tuple[Tensor, Tensor]  # (scale, zero): (out,) per channel or (out, groups), fp32
GROUP_SIZES = (32, 64, 128, 256)


# The reference GPTQ's damping. More (0.1) helped TaCQ on antonyms' dev split: 32 task
# examples hold ~650 tokens, fewer than a down projection's 1,536 inputs (bench/levers.py).
DEFAULT_DAMP = 0.01


@dataclass(frozen=True)
class GPTQConfig:
    bits: int = 3
    method: str = "gptq"  # 'gptq' (Hessian error compensation) or 'rtn' (round to nearest)
    block_size: int = 128  # columns per lazy-update block
    damp: float = DEFAULT_DAMP  # added to diag(H), as a fraction of its mean; x10 on retry
    grid: int = 100  # mse scale search: number of shrink steps per unit
    max_shrink: float = 0.8  # search shrink factors 1 .. 1 - max_shrink
    norm: float = 2.4  # error norm of the mse scale search
    act_order: bool = False  # quantize columns by decreasing diag(H)
    group_size: int | None = None  # input columns per scale/zero; None: one per row
    version: int = 1

    def __post_init__(self) -> None:
        if self.bits not in (2, 3, 4):
            raise TacqError(f"Bit width must be 2, 3 or 4 (got {self.bits}).")
        if self.method not in METHODS:
            raise TacqError(f"Method must be one of {METHODS} (got {self.method!r}).")
        if not 0 < self.damp < 10:
            raise TacqError(f"Damping must be in (0, 10) (got {self.damp}).")
        check_group_size(self.group_size)

    @property
    def maxq(self) -> int:
        return 2**self.bits - 1


def check_group_size(group_size: int | None) -> int | None:
    if group_size is not None and group_size not in GROUP_SIZES:
        raise TacqError(
            f"Group size must be one of {', '.join(map(str, GROUP_SIZES))} or none (one scale "
            f"per row); got {group_size}."
        )
    return group_size


def n_groups(in_features: int, group_size: int | None) -> int:
    """Groups per row; the last one is shorter when group_size does not divide in_features."""
    return 1 if group_size is None else -(-in_features // group_size)


def per_column(t: Tensor, in_features: int, group_size: int | None) -> Tensor:
    """A scale or zero as (out, in) or broadcastable (out, 1): one value per weight."""
    if t.dim() == 1:
        return t[:, None]
    cols = torch.arange(in_features, device=t.device) // group_size
    return t[:, cols]


@dataclass
class LayerQuant:
    """One quantized Linear: what export writes and what dequantization needs."""

    codes: Tensor  # (out, in) uint8 in [0, 2^bits)
    scale: Tensor  # (out,) fp32 per channel, or (out, groups) per group of input columns
    zero: Tensor  # same shape as scale, integer valued
    keep_mask: Tensor  # (out, in) bool: weights kept in 16 bits
    kept_values: Tensor  # (k,) fp16, row-major order of keep_mask
    bits: int
    hinv_diag: Tensor | None = None  # (in,) diag of the inverse-Hessian Cholesky (SpQR-like)
    group_size: int | None = None  # input columns per scale/zero; None: per channel
    # (kind, seed) of a tacq.formats.orthogonal.Rotation R: the codes are then those of W_r R (the
    # unkept weights in the rotated basis) and the kept values add to W_r's approximation
    rotation: tuple[str, int] | None = None

    def grid(self) -> Tensor:
        """s (codes - z), (out, in) fp32: the codes' values, without kept weights."""
        n = self.codes.shape[1]
        s, z = (per_column(t, n, self.group_size) for t in (self.scale, self.zero))
        return s * (self.codes.float() - z)

    def dequantize(self) -> Tensor:
        """W_q (out, in) fp32: grid values with kept weights put back in their place; for
        a rotated layer, the grid taken back to the original basis plus the kept weights."""
        W_q = self.grid()
        if self.rotation is None:
            W_q[self.keep_mask] = self.kept_values.float()
            return W_q
        W_q = stored_rotation(W_q.shape[1], self.rotation).unapply(W_q)
        W_q[self.keep_mask] += self.kept_values.float()
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
    """Sum over the last dim of |Q(W) - W|^norm for broadcast qparams, in place in `buf`."""
    torch.div(W, scale, out=buf)
    buf.round_().add_(zero).clamp_(0, cfg.maxq).sub_(zero).mul_(scale).sub_(W)
    return buf.abs_().pow_(cfg.norm).sum(-1)


# Shrink steps searched at once hold at most this many weights (16 MB in fp32): a small
# layer takes all its steps in one set of ops (per-op overhead is most of its cost on a
# CPU), a large one a few steps at a time. On a CPU the result is bit for bit the
# step-by-step search's (tests/test_gptq.py); a GPU may sum a row in another order.
_SEARCH_ELEMENTS = 1 << 22


def find_params(
    W: Tensor, M: Tensor | None, cfg: GPTQConfig, unmasked: QParams | None = None
) -> QParams:
    """Per-row scale and zero (out,) by min/max, then an mse search over shrunk ranges.

    Kept entries (M) are first replaced by the row mean of the unkept ones, so outliers
    that stay in 16 bits do not stretch the grid. The scale is rounded to fp16, the
    precision export stores, so a reloaded model is bit-identical.

    unmasked: this function's result for the same W without a mask (the reference
    quantization has it). Each row is searched on its own, so rows with no kept entry take
    it unchanged and only the others are searched: the search (a pow per weight and grid
    step) is the costliest part of GPTQ on a CPU. A NaN scale in `unmasked` marks a row
    not known yet (tacq.quant.rotation's grids fill in as candidates run): it is searched.
    """
    if unmasked is not None and M is not None:
        scale, zero = (t.to(W.device, torch.float32, copy=True) for t in unmasked)
        rows = M.any(1) | scale.isnan()
        if rows.any():
            scale[rows], zero[rows] = find_params(W[rows], M[rows], cfg)
        return scale, zero
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
    steps = int(cfg.max_shrink * cfg.grid)
    shrink = torch.tensor(
        [1 - i / cfg.grid for i in range(steps)], dtype=torch.float32, device=W.device
    )
    chunk = max(1, min(steps, _SEARCH_ELEMENTS // max(1, W.numel())))
    buf = torch.empty((chunk, *W.shape), dtype=W.dtype, device=W.device)
    for lo in range(0, steps, chunk):
        p = shrink[lo : lo + chunk, None]
        s1, z1 = _minmax_params(p * xmin, p * xmax, cfg.maxq)  # (steps, out)
        err = _grid_error(W, s1[..., None], z1[..., None], cfg, buf[: len(p)])
        # the first step with the least error wins, as a step-by-step search would keep it
        low, at = err.masked_fill_(err.isnan(), float("inf")).min(0)
        better = low < best
        best = torch.where(better, low, best)
        pick = at[None]
        scale = torch.where(better, s1.gather(0, pick)[0], scale)
        zero = torch.where(better, z1.gather(0, pick)[0], zero)
    return scale.half().float(), zero


def find_group_params(W: Tensor, M: Tensor | None, cfg: GPTQConfig) -> QParams:
    """find_params on each group of cfg.group_size input columns -> (out, groups) each.

    RTN and static groups (act-order) fit every group up front, on the weights as given."""
    g = cfg.group_size
    parts = [
        find_params(W[:, c : c + g], None if M is None else M[:, c : c + g], cfg)
        for c in range(0, W.shape[1], g)
    ]
    return torch.stack([s for s, _ in parts], 1), torch.stack([z for _, z in parts], 1)


def kept_in_fp16(w: Tensor) -> Tensor:
    """A kept weight is stored in fp16: round it so export round-trips exactly."""
    return w.half().float()
