"""A quantized Linear's result held bit-packed in memory: PackedLayerQuant.

Why: a LayerQuant holds a code byte and a mask bool per weight, 2 bytes per weight for
every result a study keeps (a reference per bit width, the masked run being built). Held
packed it is bits/8 bytes per weight plus 6 bytes per kept weight (int32 flat index, fp16
value): a 2-bit result of a 1.1B model is 0.28 GB instead of 2.2 GB. The unpacked codes
and the bool mask are built only when read, so every reader of a LayerQuant works as
before.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tacq.errors import TacqError
from tacq.formats.grid import LayerQuant, per_column
from tacq.formats.packed import pack_rows, packed_row_bytes, unpack_rows


def _compact(scale: Tensor, zero: Tensor) -> tuple[Tensor, Tensor]:
    """scale in fp16 and zero in uint8 (as PackedLinear and the export hold them) when that
    is exact; fp32 otherwise."""
    s16, z8 = scale.half(), zero.to(torch.uint8)
    exact = torch.equal(s16.float(), scale) and torch.equal(z8.float(), zero)
    return (s16, z8) if exact else (scale, zero)


class PackedLayerQuant(LayerQuant):
    """A LayerQuant held as bit-packed codes (PackedLinear's layout) and kept flat indices.

    `codes`, `keep_mask` and `kept_values` read as a LayerQuant's; the first two are built
    when asked for. Results are read, never written in place: a pass that changes a layer
    (tuned rounding, distillation) builds a new LayerQuant from these.
    """

    def __init__(
        self,
        packed: Tensor,
        scale: Tensor,
        zero: Tensor,
        bits: int,
        in_features: int,
        hinv_diag: Tensor | None = None,
        group_size: int | None = None,
        kept_index: Tensor | None = None,
        kept_values: Tensor | None = None,
        rotation: tuple[str, int] | None = None,
    ) -> None:
        # not the dataclass __init__: codes and keep_mask are derived, not held
        if packed.dtype != torch.uint8 or packed.shape[1] != packed_row_bytes(in_features, bits):
            raise ValueError("Packed codes have the wrong type or row length.")
        if packed.shape[0] * in_features >= 2**31:
            raise TacqError("A Linear with 2^31 or more weights needs int64 kept indices.")
        self.packed, self.in_features = packed, in_features
        self._scale, self._zero = _compact(scale.float(), zero.float())
        self.bits, self.group_size, self.rotation = bits, group_size, rotation
        self.hinv_diag = hinv_diag
        empty = torch.zeros(0, device=packed.device)
        self.kept_index = (empty if kept_index is None else kept_index).to(torch.int32)
        self._kept_values = (empty if kept_values is None else kept_values).half()
        if self.kept_index.numel() != self._kept_values.numel():
            raise ValueError("Kept indices and kept values differ in number.")

    @classmethod
    def from_layer(cls, lq: LayerQuant) -> PackedLayerQuant:
        """The same layer held packed (a PackedLayerQuant is returned as it is)."""
        if isinstance(lq, PackedLayerQuant):
            return lq
        in_f = lq.codes.shape[1]
        index = lq.keep_mask.reshape(-1).nonzero().squeeze(1)  # row-major, as kept_values
        return cls(pack_rows(lq.codes, lq.bits), lq.scale, lq.zero, lq.bits, in_f, lq.hinv_diag,
                   lq.group_size, index, lq.kept_values, lq.rotation)  # fmt: skip

    @property
    def scale(self) -> Tensor:
        return self._scale.float()

    @property
    def zero(self) -> Tensor:
        return self._zero.float()

    @property
    def codes(self) -> Tensor:
        return unpack_rows(self.packed, self.bits, self.in_features).to(torch.uint8)

    @property
    def keep_mask(self) -> Tensor:
        out_f = self.packed.shape[0]
        flat = torch.zeros(out_f * self.in_features, dtype=torch.bool, device=self.packed.device)
        flat[self.kept_index.long()] = True
        return flat.view(out_f, self.in_features)

    @property
    def kept_values(self) -> Tensor:
        return self._kept_values

    @property
    def shape(self) -> tuple[int, int]:
        return self.packed.shape[0], self.in_features

    @property
    def n_kept(self) -> int:
        return self.kept_index.numel()

    def grid(self) -> Tensor:
        """s (codes - z), (out, in) fp32, as LayerQuant.grid (no code byte in between)."""
        codes = unpack_rows(self.packed, self.bits, self.in_features)
        n = self.in_features
        s, z = (per_column(t, n, self.group_size) for t in (self.scale, self.zero))
        return s * (codes.float() - z)

    def dequantize(self) -> Tensor:
        """W_q, as LayerQuant.dequantize (unmasked and unrotated: the grid itself)."""
        if self.rotation is None and not self.n_kept:
            return self.grid()
        return super().dequantize()

    def layer(self) -> LayerQuant:
        """The same layer unpacked (a byte per code, a bool mask): as it was held before."""
        return LayerQuant(self.codes, self.scale, self.zero, self.keep_mask, self.kept_values,
                          self.bits, self.hinv_diag, self.group_size, self.rotation)  # fmt: skip

    def held_tensors(self) -> dict[str, Tensor]:
        """What it holds in memory (the reference cache writes these of an unmasked one)."""
        held = {"packed": self.packed, "scale": self._scale, "zero": self._zero}
        if self.n_kept:
            held |= {"index": self.kept_index, "kept": self._kept_values}
        return held if self.hinv_diag is None else held | {"hinv": self.hinv_diag}

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.held_tensors().values())

    def __repr__(self) -> str:
        g = f", group_size={self.group_size}" if self.group_size else ""
        k = f", kept={self.n_kept}" if self.n_kept else ""
        r = f", rotation={self.rotation[0]}" if self.rotation else ""
        out_f = self.packed.shape[0]
        return f"PackedLayerQuant({out_f}x{self.in_features}, bits={self.bits}{g}{k}{r})"
