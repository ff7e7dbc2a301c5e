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
Study.quantize of a Recipe with a rotation makes such a variant; LayerQuant and PackedLinear hold it with
its (kind, seed), and the packed export stores the seed (bench/quality.py's `_rot` and
`_roth` rows measure both kinds).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tacq.data.batches import Batch
from tacq.errors import TacqError
from tacq.formats.grid import GPTQConfig, QParams, kept_in_fp16
from tacq.formats.held import PackedLayerQuant
from tacq.formats.orthogonal import ROTATION_KINDS, Rotation, rotation_for, rotation_seed
from tacq.models import quantizable_linears
from tacq.progress import Progress
from tacq.quant.quantize import QuantResult, quantize_model


@contextmanager
def rotated_linears(
    model: nn.Module, keep_masks: Mapping[str, Tensor] | None, seed: int, kind: str = "haar"
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
    keep_masks: Mapping[str, Tensor] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    kind: str = "haar",
    exec_device: str | torch.device | None = None,
    grids: dict[str, QParams] | None = None,
) -> QuantResult:
    """GPTQ (true-sequential, block by block) on every decoder Linear's rotated residual.

    Returns rotated LayerQuants: codes of W_r R, the kept weights (fp16) in the original
    basis, and each Linear's (kind, seed) of R, so lq.dequantize() is W_k + Q(W_r R) R^T.
    The model is unchanged afterwards. Needs a second copy of the Linear weights (the
    rotated residuals) while it runs.

    grids: per-channel grids of the rotated weights found by earlier runs of this basis
    and bit width (References.rotated_grid; NaN where not found yet), updated in place. A
    row with no kept weight is the same rotated row in every run, so it reuses its grid
    instead of searching again (same values); rows with kept weights are searched.
    """
    reuse = grids is not None and cfg.group_size is None
    changed = {n: m.any(1).cpu() for n, m in (keep_masks or {}).items()} if reuse else {}
    base = _known_grids(model, grids, changed) if reuse else None
    with rotated_linears(model, keep_masks, seed, kind) as kept:
        res = quantize_model(
            model, batches, cfg, None, progress=progress, exec_device=exec_device, unmasked=base
        )
    if reuse:
        _learn_grids(grids, res, changed)
    for name, lq in res.layers.items():
        K, rotation = kept.get(name), (kind, rotation_seed(seed, name))
        index, values = None, None
        if K is not None:
            mask = keep_masks[name].cpu().reshape(-1)
            index = mask.nonzero().squeeze(1)  # row-major, as LayerQuant's
            values = K.cpu().reshape(-1)[mask]
        res.layers[name] = PackedLayerQuant(
            lq.packed, lq.scale, lq.zero, lq.bits, lq.in_features, lq.hinv_diag,
            lq.group_size, index, values, rotation,
        )  # fmt: skip
    return res


def _known_grids(
    model: nn.Module, grids: dict[str, QParams], changed: dict[str, Tensor]
) -> dict[str, QParams]:
    """Each Linear's grid as far as known: NaN scales for rows never seen unchanged, and for
    rows whose kept weights make their rotated row differ (find_params searches them)."""
    out = {}
    for name, lin in quantizable_linears(model).items():
        rows = lin.weight.shape[0]
        scale, zero = grids.get(name, (torch.full((rows,), float("nan")), torch.zeros(rows)))
        scale = scale.clone()
        if name in changed:
            scale[changed[name]] = float("nan")
        out[name] = (scale, zero)
    return out


def _learn_grids(grids: dict[str, QParams], res: QuantResult, changed: dict[str, Tensor]) -> None:
    """Keep the grids of rows with no kept weight: the rotated weight's own rows."""
    for name, lq in res.layers.items():
        new_s, new_z = lq.scale.reshape(-1).float(), lq.zero.reshape(-1).float()
        if name in grids:
            scale, zero = (t.clone() for t in grids[name])
        else:  # rows never seen stay unknown
            scale, zero = torch.full_like(new_s, float("nan")), torch.zeros_like(new_z)
        same = ~changed[name] if name in changed else torch.ones_like(new_s, dtype=torch.bool)
        scale[same], zero[same] = new_s[same], new_z[same]
        grids[name] = (scale, zero)


def check_rotation(kind: str, method: str) -> None:
    """Refuse, before any work, what a rotated basis does not combine with."""
    if kind not in ROTATION_KINDS:
        raise TacqError(f"Unknown rotation {kind!r}: one of {', '.join(ROTATION_KINDS)}.")
    if method != "gptq":
        raise TacqError("A rotated basis is for GPTQ, which uses the rotated inputs' Hessians.")
