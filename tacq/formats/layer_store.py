"""One quantized Linear as stored tensors, both ways: b-bit codes and zeros as packed
bitstreams, an fp16 scale per row or group, the kept weights as CSR (a count per row,
column indices, fp16 values), and every shape, dtype and index checked on the way back.

tacq.formats.export writes and reads whole folders of these; tacq.formats.sizes counts
their bytes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tacq.errors import TacqError
from tacq.formats.grid import LayerQuant, check_group_size, n_groups

FORMAT_VERSION = 2  # 2: zeros at b bits, uint16 per-row kept counts


# ---------------------------------------------------------------- bit packing


def pack_2bit(codes: Tensor) -> Tensor:
    """uint8 (N,) in [0,4) -> uint8 (ceil(N/4),): four codes per byte, low bits first."""
    c = torch.nn.functional.pad(codes, (0, (-len(codes)) % 4)).view(-1, 4)
    return c[:, 0] | (c[:, 1] << 2) | (c[:, 2] << 4) | (c[:, 3] << 6)


def unpack_2bit(packed: Tensor, n: int) -> Tensor:
    return torch.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)], 1).view(-1)[:n]


def pack_4bit(codes: Tensor) -> Tensor:
    """uint8 (N,) in [0,16) -> uint8 (ceil(N/2),): two codes per byte."""
    c = torch.nn.functional.pad(codes, (0, len(codes) % 2)).view(-1, 2)
    return c[:, 0] | (c[:, 1] << 4)


def unpack_4bit(packed: Tensor, n: int) -> Tensor:
    return torch.stack([packed & 15, packed >> 4], 1).view(-1)[:n]


_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_3bit(codes: Tensor) -> Tensor:
    """uint8 (N,) in [0,8) -> uint8 (ceil(3N/8),): a plain bitstream, 3 bits per code."""
    bits = ((codes[:, None] >> torch.arange(3, dtype=torch.uint8)) & 1).view(-1)
    bits = torch.nn.functional.pad(bits, (0, (-len(bits)) % 8)).view(-1, 8)
    return (bits * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def unpack_3bit(packed: Tensor, n: int) -> Tensor:
    bits = ((packed[:, None] >> torch.arange(8, dtype=torch.uint8)) & 1).view(-1)[: 3 * n]
    return (bits.view(n, 3) << torch.arange(3, dtype=torch.uint8)).sum(1, dtype=torch.uint8)


PACK = {2: pack_2bit, 3: pack_3bit, 4: pack_4bit}
UNPACK = {2: unpack_2bit, 3: unpack_3bit, 4: unpack_4bit}


def packed_len(n: int, bits: int) -> int:
    return math.ceil(n * bits / 8)


# ---------------------------------------------------------------- layers


def count_dtype(in_f: int) -> torch.dtype:
    """Kept weights per row are at most in_f: uint16 holds them up to 65,535 inputs."""
    return torch.uint16 if in_f < 2**16 else torch.int32


def layer_tensors(name: str, lq: LayerQuant) -> dict[str, Tensor]:
    """The stored tensors of one quantized Linear (format 2; tacq.formats.sizes.linear_bytes
    counts exactly these bytes)."""
    out_f, in_f = lq.codes.shape
    t = {
        f"{name}.codes": PACK[lq.bits](lq.codes.reshape(-1).to(torch.uint8)),
        f"{name}.scale": lq.scale.half(),
        f"{name}.zero": PACK[lq.bits](lq.zero.reshape(-1).to(torch.uint8)),
    }
    if lq.keep_mask.any():
        rows, cols = lq.keep_mask.nonzero(as_tuple=True)  # row-major, like kept_values
        counts = torch.bincount(rows, minlength=out_f)
        t[f"{name}.kept_counts"] = counts.to(count_dtype(in_f))
        t[f"{name}.kept_cols"] = cols.to(torch.int16 if in_f <= 2**15 else torch.int32)
        t[f"{name}.kept_values"] = lq.kept_values.half()
    return t


def _need(t: dict, key: str, dtype: torch.dtype, shape: tuple | None = None) -> Tensor:
    if key not in t:
        raise TacqError(f"The checkpoint lacks tensor {key}; the file is incomplete.")
    x = t[key]
    if x.dtype != dtype:
        raise TacqError(f"Tensor {key} has dtype {x.dtype}, expected {dtype}.")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise TacqError(f"Tensor {key} has shape {tuple(x.shape)}, expected {tuple(shape)}.")
    return x


def layer_from_tensors(
    name: str,
    t: dict[str, Tensor],
    shape: tuple[int, int],
    bits: int,
    group_size: int | None = None,
    rotation: tuple[str, int] | None = None,
    version: int = FORMAT_VERSION,
) -> LayerQuant:
    """Rebuild one LayerQuant from the tensors of format `version`, checking every shape,
    dtype and index first."""
    if bits not in PACK:
        raise TacqError(f"{name}: bits must be 2, 3 or 4 (got {bits}).")
    try:
        check_group_size(group_size)
    except TacqError as e:
        raise TacqError(f"{name}: {e} The file is damaged.") from e
    out_f, in_f = shape
    n = out_f * in_f
    qshape = (out_f,) if group_size is None else (out_f, n_groups(in_f, group_size))
    packed = _need(t, f"{name}.codes", torch.uint8, (packed_len(n, bits),))
    scale = _need(t, f"{name}.scale", torch.float16, qshape).float()
    zero = _read_zero(name, t, qshape, bits, version)
    if not torch.isfinite(scale).all() or int(zero.max()) > 2**bits - 1:
        raise TacqError(f"{name}: scale or zero out of range; the file is damaged.")
    codes = UNPACK[bits](packed, n).view(out_f, in_f)
    mask = torch.zeros(out_f, in_f, dtype=torch.bool)
    values = torch.zeros(0, dtype=torch.float16)
    rowptr = _read_rowptr(name, t, out_f, in_f, version)
    if rowptr is not None:
        cols_t = t.get(f"{name}.kept_cols")
        if cols_t is None or cols_t.dtype not in (torch.int16, torch.int32) or cols_t.dim() != 1:
            raise TacqError(f"{name}: kept column indices are missing or of the wrong type.")
        cols = cols_t.long()
        k = len(cols)
        values = _need(t, f"{name}.kept_values", torch.float16, (k,))
        if (
            rowptr[0] != 0
            or rowptr[-1] != k
            or (rowptr[1:] < rowptr[:-1]).any()
            or (k and (cols.min() < 0 or cols.max() >= in_f))
        ):
            raise TacqError(f"{name}: kept-weight indices are out of range; the file is damaged.")
        rows = torch.repeat_interleave(torch.arange(out_f), rowptr[1:] - rowptr[:-1])
        mask[rows, cols] = True
        if int(mask.sum()) != k:
            raise TacqError(f"{name}: duplicate kept-weight indices; the file is damaged.")
        order = torch.argsort(rows * in_f + cols)  # row-major, as LayerQuant expects
        values = values[order]
    return LayerQuant(codes, scale, zero.float(), mask, values, bits, None, group_size, rotation)


def _read_zero(name: str, t: dict[str, Tensor], qshape: tuple, bits: int, version: int) -> Tensor:
    """Zeros (qshape) uint8: format 1 stored them so, format 2 as a b-bit bitstream."""
    if version < 2:
        return _need(t, f"{name}.zero", torch.uint8, qshape)
    nq = math.prod(qshape)
    packed = _need(t, f"{name}.zero", torch.uint8, (packed_len(nq, bits),))
    return UNPACK[bits](packed, nq).view(qshape)


def _read_rowptr(
    name: str, t: dict[str, Tensor], out_f: int, in_f: int, version: int
) -> Tensor | None:
    """CSR row pointers (out + 1,) int64, or None when the Linear keeps no weight: format 1
    stored them as int32, format 2 stores each row's kept count."""
    if version < 2:
        if f"{name}.kept_rowptr" not in t:
            return None
        return _need(t, f"{name}.kept_rowptr", torch.int32, (out_f + 1,)).long()
    if f"{name}.kept_counts" not in t:
        return None
    counts = _need(t, f"{name}.kept_counts", count_dtype(in_f), (out_f,)).long()
    if (counts > in_f).any():
        raise TacqError(f"{name}: kept-weight counts are out of range; the file is damaged.")
    return torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
