"""Honest bits accounting: what a packed Linear (ours or a peer's) weighs, byte by byte.

Counted from the stored format (tacq.formats.export writes it): packed codes, a scale and zero per
row or group, and the kept weights as CSR (fp16 value, column index, per-row count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KEPT_VALUE_BYTES = 2  # fp16 value of a kept weight
ROW_COUNT_BYTES = 2  # uint16 kept count per output row (int32 beyond 65,535 inputs)


def paper_bpw(bits: int, r: float) -> float:
    """BPW = b (1 - r) + 32 r: 16-bit value + 16-bit index per kept weight (TaCQ paper)."""
    return bits * (1 - r) + 32 * r


@dataclass(frozen=True)
class NumberFormat:
    """How a method stores one quantized Linear: what honest bytes count, for every method
    (ours and the peers'): codes, a scale and a zero per group, kept values and indices."""

    bits: int
    group_size: int | None = None  # input columns per scale/zero; None: one per output row
    scale_bytes: float = 2  # fp16 scale
    # None: ours, a zero packed at `bits` bits (an integer in [0, 2^bits)); a peer may store
    # uint8 zeros: 1, or fp16 ones: 2
    zero_bytes: float | None = None


def linear_bytes(out_f: int, in_f: int, kept: int, fmt: NumberFormat) -> tuple[int, int, int]:
    """(code, qparam, kept) bytes of one Linear as packed format 2 (tacq.formats.layer_store) stores it:
    packed codes; scale and zero per group; kept weights as CSR (fp16 value, int16/int32
    column index, and a uint16/int32 kept count per output row)."""
    code = math.ceil(out_f * in_f * fmt.bits / 8)
    groups = 1 if fmt.group_size is None else -(-in_f // fmt.group_size)
    zero_bytes = fmt.bits / 8 if fmt.zero_bytes is None else fmt.zero_bytes
    qparam = math.ceil(out_f * groups * (fmt.scale_bytes + zero_bytes))
    kb = 0
    if kept:
        idx_bytes = 2 if in_f <= 2**15 else 4
        count_bytes = ROW_COUNT_BYTES if in_f < 2**16 else 4
        kb = kept * (KEPT_VALUE_BYTES + idx_bytes) + out_f * count_bytes
    return code, qparam, kb


@dataclass(frozen=True)
class SizeReport:
    bits: int
    n_weights: int  # quantizable weights
    n_kept: int
    bpw_paper: float  # the paper's formula: b (1 - r) + 32 r, scales not counted
    code_bytes: int  # packed b-bit codes
    qparam_bytes: int  # scale and zero per row or group
    kept_bytes: int  # CSR: fp16 values + int16/int32 column indices + per-row counts
    other_bytes: int  # embeddings, norms, untied lm_head in fp16
    total_bytes: int  # what the packed export weighs (tensor data)
    fp16_bytes: int  # the whole model in fp16
    group_size: int | None = None

    @property
    def ratio(self) -> float:
        return self.n_kept / max(self.n_weights, 1)

    @property
    def bpw_honest(self) -> float:
        """Quantized-part bytes * 8 / quantizable weights, stats and indices included."""
        return 8 * (self.code_bytes + self.qparam_bytes + self.kept_bytes) / max(self.n_weights, 1)


def size_report(
    shapes: list[tuple[int, int]],
    kept: list[int],
    bits: int,
    other_params: int,
    group_size: int | None = None,
    fmt: NumberFormat | None = None,
) -> SizeReport:
    """Honest size of a packed model: per-Linear codes, qparams, kept CSR; the rest fp16.

    fmt: another method's storage (a peer's); default ours at `bits` and `group_size`."""
    fmt = fmt or NumberFormat(bits, group_size)
    code = qp = kb = 0
    for (out_f, in_f), k in zip(shapes, kept):
        c, q, b = linear_bytes(out_f, in_f, k, fmt)
        code, qp, kb = code + c, qp + q, kb + b
    n = sum(o * i for o, i in shapes)
    other = 2 * other_params
    n_kept = int(sum(kept))
    return SizeReport(
        fmt.bits,
        n,
        n_kept,
        paper_bpw(fmt.bits, n_kept / max(n, 1)),
        code,
        qp,
        kb,
        other,
        code + qp + kb + other,
        2 * (n + other_params),
        fmt.group_size,
    )
