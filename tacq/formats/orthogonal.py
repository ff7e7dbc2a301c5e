"""Orthogonal rotations drawn from a seed, applied without forming their matrix.

Why: quantizing W R instead of W (and feeding the Linear x R) spreads each row's few large
entries over all its columns (incoherence processing, QuIP), so one scale per row fits the
row better; W x = (W R)(R^T x) keeps the output. A variant stores only the seed.
tacq.quant.rotation quantizes in this basis; LayerQuant and PackedLinear compute with it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from tacq.errors import TacqError

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


def stored_rotation(n: int, rotation: tuple[str, int]) -> Rotation:
    """The rotation of an n-column Linear that a variant stores as (kind, seed)."""
    kind, seed = rotation
    return Rotation.draw(n, seed, kind)


def rotation_seed(seed: int, name: str) -> int:
    """One Linear's rotation seed: a variant's seed mixed with the module name."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63


def rotation_for(name: str, n: int, seed: int, kind: str = "haar") -> Rotation:
    return Rotation.draw(n, rotation_seed(seed, name), kind)
