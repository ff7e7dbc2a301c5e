"""TaCQ's kept weights exact, the rest quantized by GPTQ in a randomly rotated input basis.

Per-channel GPTQ spends one scale on a whole row, so a few large entries stretch the grid
for every other weight of the row. Multiplying a weight by a random orthogonal matrix R on
its input side spreads each row's mass evenly over its columns (incoherence processing, as
in QuIP, Chee et al. 2023), and the output is unchanged when the Linear's input is rotated
too: W x = (W R)(R^T x). Here the weights TaCQ keeps stay in 16 bits in the original basis,
so the circuit stays where the heatmaps show it; the rest W_r (W with the kept entries
zeroed) is quantized as W_r R with GPTQ, on Hessians of the rotated inputs. The model then
holds W_k + Q(W_r R) R^T: the kept part exactly, the residual approximated.

Each Linear's R is a Haar-random orthogonal matrix drawn from (seed, the Linear's name), so
a variant stores one integer for all of them and the honest bytes do not change. Applying R
costs one (in x in) product per Linear and token at inference; a structured (Hadamard)
rotation would make that cheaper. Measured as a lever for issue 18 (bench/quality.py's
`_rot` methods); the packed export does not hold this format yet.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tacq.data import Batch
from tacq.gptq import GPTQConfig, kept_in_fp16
from tacq.models import quantizable_linears
from tacq.progress import Progress
from tacq.quantize import QuantResult, quantize_model


def random_rotation(n: int, seed: int) -> Tensor:
    """(n, n) Haar-random orthogonal matrix, fp32, the same for the same (n, seed) on any
    machine (drawn and factorized in float64 on the CPU)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float().contiguous()  # sign fix: Haar


def rotation_seed(seed: int, name: str) -> int:
    """One Linear's rotation seed: a variant's seed mixed with the module name."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63


def rotation_for(name: str, n: int, seed: int) -> Tensor:
    return random_rotation(n, rotation_seed(seed, name))


@dataclass
class RotatedResult:
    """Codes of each rotated residual W_r R (GPTQ's result) and the kept weights as
    (flat index, 16-bit value) pairs in the original basis."""

    result: QuantResult
    kept_index: dict[str, Tensor]  # name -> (k,) int64 flat positions in (out, in)
    kept_value: dict[str, Tensor]  # name -> (k,) fp32 values, each exact in fp16
    seed: int

    def dequantized(self) -> dict[str, Tensor]:
        """name -> W_k + Q(W_r R) R^T, fp32 (out, in): what the model computes with."""
        out = {}
        for name, lq in self.result.layers.items():
            W = lq.dequantize().float() @ rotation_for(name, lq.codes.shape[1], self.seed).T
            W.view(-1).index_add_(0, self.kept_index[name], self.kept_value[name])
            out[name] = W
        return out

    def kept(self) -> int:
        return sum(int(i.numel()) for i in self.kept_index.values())


@contextmanager
def rotated_linears(
    model: nn.Module, keep_masks: dict[str, Tensor] | None, seed: int
) -> Iterator[dict[str, Tensor]]:
    """Inside: each decoder Linear holds W_r R and rotates its input by R (a pre-hook); a
    forward hook adds W_k x from the unrotated input, so the model computes what it did (with
    the kept weights rounded to fp16, as stored).
    Yields name -> W_k (dense, zero off the mask) for the Linears with a mask; one without
    gets no kept part and no second hook. On exit the hooks go and every Linear holds its
    original weight tensor again."""
    linears = quantizable_linears(model)
    originals = {n: lin.weight.data for n, lin in linears.items()}
    handles = []
    kept: dict[str, Tensor] = {}
    try:
        for name, lin in linears.items():
            W = originals[name]
            R = rotation_for(name, W.shape[1], seed).to(W.device)
            M = keep_masks.get(name) if keep_masks else None
            rest = W.float() if M is None else torch.where(M.to(W.device), 0.0, W.float())
            lin.weight.data = (rest @ R).to(W.dtype)
            handles.append(lin.register_forward_pre_hook(_rotate_input(R, stash=M is not None)))
            if M is not None:
                kept[name] = kept_in_fp16(W.float() - rest).to(W.dtype)  # stored in fp16
                handles.append(lin.register_forward_hook(_add_kept(kept[name])))
        yield kept
    finally:
        for h in handles:
            h.remove()
        for name, lin in linears.items():
            lin.weight.data = originals[name]


def _rotate_input(R: Tensor, stash: bool):
    def hook(mod: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if stash:  # the kept part reads the original basis (_add_kept)
            mod._tacq_unrotated = x
        return (x @ R.to(x.device, x.dtype), *args[1:])

    return hook


def _add_kept(K: Tensor):
    def hook(mod: nn.Module, args: tuple, out: Tensor) -> Tensor:
        x = mod.__dict__.pop("_tacq_unrotated")
        return out + F.linear(x, K.to(x.device, x.dtype))

    return hook


def quantize_rotated(
    model: nn.Module,
    batches: list[Batch],
    cfg: GPTQConfig,
    keep_masks: dict[str, Tensor] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> RotatedResult:
    """GPTQ (true-sequential, block by block) on every decoder Linear's rotated residual.

    The model is unchanged afterwards; its weights are RotatedResult.dequantized(). Needs a
    second copy of the Linear weights (the rotated residuals) while it runs.
    """
    with rotated_linears(model, keep_masks, seed) as kept:
        res = quantize_model(model, batches, cfg, None, progress=progress)
    index, value = {}, {}
    for name in res.layers:
        K = kept.get(name)
        if K is None:  # no mask: nothing kept
            index[name], value[name] = torch.zeros(0, dtype=torch.long), torch.zeros(0)
            continue
        idx = keep_masks[name].reshape(-1).nonzero().squeeze(1).cpu()
        index[name], value[name] = idx, K.reshape(-1).cpu()[idx].float()
    return RotatedResult(res, index, value, seed)
