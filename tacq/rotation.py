"""TaCQ's kept weights exact, the rest quantized by GPTQ in a randomly rotated input basis.

Per-channel GPTQ spends one scale on a whole row, so a few large entries stretch the grid
for every other weight of the row. Multiplying a weight by a random orthogonal matrix R on
its input side spreads each row's mass evenly over its columns (incoherence processing, as
in QuIP, Chee et al. 2023), and the output is unchanged when the Linear's input is rotated
too: W x = (W R)(R^T x). Here the weights TaCQ keeps stay in 16 bits in the original basis,
so the circuit stays where the heatmaps show it; the rest W_r (W with the kept entries
zeroed) is quantized as W_r R with GPTQ, on Hessians of the rotated inputs. The model then
holds W_k + Q(W_r R) R^T: the kept part exactly, the residual approximated.

Each Linear's R is drawn from (seed, the Linear's name), so a variant stores one integer
for all of them and the honest bytes do not change. Two kinds (Rotation): a dense
Haar-random R, n^2 floats per Linear, and a structured one, random signs times a small Haar
matrix Kronecker a Hadamard matrix, a few kilobytes per Linear and cheaper to apply.
Measured as a lever for issue 18 (bench/quality.py's `_rot` and `_roth` methods).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tacq.data import Batch
from tacq.errors import TacqError
from tacq.gptq import GPTQConfig, kept_in_fp16
from tacq.models import quantizable_linears
from tacq.progress import Progress
from tacq.quantize import QuantResult, quantize_model

ROTATION_KINDS = ("haar", "hadamard")


def random_rotation(n: int, seed: int) -> Tensor:
    """(n, n) Haar-random orthogonal matrix, fp32, the same for the same (n, seed) on any
    machine (drawn and factorized in float64 on the CPU)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float().contiguous()  # sign fix: Haar


@lru_cache(maxsize=8)
def hadamard(h: int) -> Tensor:
    """(h, h) Sylvester Hadamard matrix over sqrt(h) (orthogonal, symmetric); h a power of 2."""
    H = torch.ones(1, 1, dtype=torch.float64)
    while H.shape[0] < h:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)])
    return (H / h**0.5).float()


@dataclass(frozen=True)
class Rotation:
    """R = diag(signs) (mix ⊗ hadamard), (n, n) orthogonal, applied without forming it.

    "haar": mix is a dense (n, n) Haar-random matrix (hadamard 1 x 1, no signs): n^2 floats
    per Linear. "hadamard": n = a * h with h the largest power of two dividing n; mix is a
    small (a, a) Haar matrix and the signs random, so each output mixes every input (every
    entry of R is nonzero) while the variant holds a few kilobytes per Linear (576 = 9 x 64,
    1536 = 3 x 512 on SmolLM2).
    """

    signs: Tensor  # (n,) +-1
    mix: Tensor  # (a, a) Haar-random orthogonal
    hadamard: Tensor  # (h, h) normalized Hadamard

    @classmethod
    def draw(cls, n: int, seed: int, kind: str = "haar") -> Rotation:
        if kind == "haar":
            return cls(torch.ones(n), random_rotation(n, seed), torch.ones(1, 1))
        if kind != "hadamard":
            raise TacqError(f"Unknown rotation {kind!r}: one of {', '.join(ROTATION_KINDS)}.")
        h = n & -n  # the largest power of two dividing n
        g = torch.Generator().manual_seed(seed)
        signs = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
        return cls(signs, random_rotation(n // h, seed), hadamard(h))

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Rotation:
        return Rotation(*(t.to(device, dtype) for t in (self.signs, self.mix, self.hadamard)))

    def apply(self, x: Tensor) -> Tensor:
        """x @ R over x's last dimension."""
        x = x * self.signs
        if len(self.hadamard) == 1:
            return x @ self.mix
        z = x.unflatten(-1, (len(self.mix), len(self.hadamard))) @ self.hadamard
        return (self.mix.T @ z).flatten(-2)

    def unapply(self, x: Tensor) -> Tensor:
        """x @ R^T: W R^T takes a weight quantized in the rotated basis back."""
        if len(self.hadamard) == 1:
            return (x @ self.mix.T) * self.signs
        z = x.unflatten(-1, (len(self.mix), len(self.hadamard))) @ self.hadamard
        return (self.mix @ z).flatten(-2) * self.signs

    def matrix(self) -> Tensor:
        """R itself (n, n): for tests and small checks."""
        return self.apply(torch.eye(len(self.signs), device=self.signs.device))


def rotation_seed(seed: int, name: str) -> int:
    """One Linear's rotation seed: a variant's seed mixed with the module name."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63


def rotation_for(name: str, n: int, seed: int, kind: str = "haar") -> Rotation:
    return Rotation.draw(n, rotation_seed(seed, name), kind)


@dataclass
class RotatedResult:
    """Codes of each rotated residual W_r R (GPTQ's result) and the kept weights as
    (flat index, 16-bit value) pairs in the original basis."""

    result: QuantResult
    kept_index: dict[str, Tensor]  # name -> (k,) int64 flat positions in (out, in)
    kept_value: dict[str, Tensor]  # name -> (k,) fp32 values, each exact in fp16
    seed: int
    kind: str = "haar"

    def dequantized(self) -> dict[str, Tensor]:
        """name -> W_k + Q(W_r R) R^T, fp32 (out, in): what the model computes with."""
        out = {}
        for name, lq in self.result.layers.items():
            W = rotation_for(name, lq.codes.shape[1], self.seed, self.kind).unapply(
                lq.dequantize().float()
            )
            W.view(-1).index_add_(0, self.kept_index[name], self.kept_value[name])
            out[name] = W
        return out

    def kept(self) -> int:
        return sum(int(i.numel()) for i in self.kept_index.values())


@contextmanager
def rotated_linears(
    model: nn.Module, keep_masks: dict[str, Tensor] | None, seed: int, kind: str = "haar"
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
            R = rotation_for(name, W.shape[1], seed, kind).to(W.device)
            M = keep_masks.get(name) if keep_masks else None
            rest = W.float() if M is None else torch.where(M.to(W.device), 0.0, W.float())
            lin.weight.data = R.apply(rest).to(W.dtype)
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


def _rotate_input(R: Rotation, stash: bool):
    def hook(mod: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if stash:  # the kept part reads the original basis (_add_kept)
            mod._tacq_unrotated = x
        return (R.to(x.device, x.dtype).apply(x), *args[1:])

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
    kind: str = "haar",
) -> RotatedResult:
    """GPTQ (true-sequential, block by block) on every decoder Linear's rotated residual.

    The model is unchanged afterwards; its weights are RotatedResult.dequantized(). Needs a
    second copy of the Linear weights (the rotated residuals) while it runs.
    """
    with rotated_linears(model, keep_masks, seed, kind) as kept:
        res = quantize_model(model, batches, cfg, None, progress=progress)
    index, value = {}, {}
    for name in res.layers:
        K = kept.get(name)
        if K is None:  # no mask: nothing kept
            index[name], value[name] = torch.zeros(0, dtype=torch.long), torch.zeros(0)
            continue
        idx = keep_masks[name].reshape(-1).nonzero().squeeze(1).cpu()
        index[name], value[name] = idx, K.reshape(-1).cpu()[idx].float()
    return RotatedResult(res, index, value, seed, kind)
