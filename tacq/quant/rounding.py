"""Tune the rounding of the unkept weights block by block, after masked GPTQ.

GPTQ rounds each column once, greedily, against a quadratic proxy of one Linear's output
error. This pass fits the rounding to the whole decoder block's output on the calibration
tokens instead: a learned offset per weight, rounded with a straight-through estimator and
moved by signed gradient steps, and optionally a factor on each scale (the idea of
AutoRound, Cheng et al. 2023, applied here after TaCQ's selection, on GPTQ's grid). It
starts from each weight on that grid (round up or down) or from GPTQ's codes (one level up
or down). Kept weights stay at their 16-bit values and out of the search. With clip
(RoundingConfig.clip) each row's or group's grid ends, max and min, are tuned too, so its
scale and its (integer) zero move together, as AutoRound's clip does; otherwise zeros stay
GPTQ's. Either way there is one scale and one zero per row or group, so the number
format, the packed export and the honest bytes do not change. On a rotated layer (tacq.quant.rotation) the search runs on the
grid of W_r R, every entry of it, and the kept weights add in the original basis as stored.

The quantized block reads the quantized model's hidden states and is fit to the fp block's
output on the fp model's hidden states, so each block also corrects what earlier blocks
lost. Of the start (GPTQ) and the end, the one with the lower loss on all calibration
tokens is kept: the pass never makes a block worse on what it was fit to.

A lower block loss does not always make a better model: on four of seven bundled tasks
at 2 bits the unchecked pass raised the held-out answer NLL (bench/README.md). Given
check batches (calibration examples held out of the fit, loss on their answers), a
block's tuning is also kept only if the quantized model's loss on them does not rise.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from tacq.circuit.gradients import token_loss
from tacq.data.batches import Batch
from tacq.errors import TacqError
from tacq.formats.grid import LayerQuant, per_column
from tacq.formats.orthogonal import Rotation, stored_rotation
from tacq.models import decoder_layers, input_device, quantizable_linears
from tacq.progress import Progress, no_progress
from tacq.quant.quantize import QuantResult, _run_block, capture_block_inputs

STARTS = ("gptq", "rtn")


@dataclass(frozen=True)
class RoundingLog:
    """What a rounding pass saw, per decoder block (QuantResult.logs["rounding"])."""

    block_losses: list[tuple[float, float]]  # (before, after) calibration loss
    check_losses: list[tuple[float, float]]  # (with GPTQ's, with the tuned) check loss


@dataclass(frozen=True)
class RoundingConfig:
    steps: int = 100  # signed gradient steps per block (one calibration batch each)
    lr: float | None = None  # offset moved per step; None: 1 / steps, as AutoRound
    seed: int = 0  # order in which the batches are visited
    # rtn: from the weight itself on GPTQ's grid, each may round up or down (AutoRound's
    # search on TaCQ's grid and mask); gptq: from GPTQ's codes, each may move one level.
    # On antonyms' dev split (2-bit, 0.20 % kept) rtn with scales beat the others.
    start: str = "rtn"
    scales: bool = True  # also tune each scale by a factor in [0.5, 1.5]
    # instead, tune each row's or group's grid ends, max and min, by factors in [0.5, 1.5]:
    # the scale and the zero follow them (the zero rounded), as AutoRound's clip does
    clip: bool = False
    # hold every 4th calibration batch out of the fit; keep a block's tuning only if the
    # model's answer loss on those does not rise (tune_rounding's check)
    check: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise TacqError(f"Rounding steps must be at least 1 (got {self.steps}).")
        if self.start not in STARTS:
            raise TacqError(f"Rounding starts from one of {STARTS} (got {self.start!r}).")

    @property
    def step_size(self) -> float:
        return self.lr if self.lr is not None else 1.0 / self.steps


@dataclass
class _Tunable:
    """One Linear's rounding search: levels on GPTQ's grid and a learned offset."""

    lq: LayerQuant
    levels: Tensor  # (out, in) where rounding starts from, in grid steps above the zero
    low: Tensor  # per column: -zero (the lowest level)
    high: Tensor  # per column: maxq - zero
    bound: float  # the offset stays in [-bound, bound]
    offset: Tensor  # (out, in) learned
    factor: Tensor  # like lq.scale: learned scale factor - 1, in [-0.5, 0.5]
    # a rotated layer (lq.rotation): its R, and its kept weights dense in the original basis
    rotation: Rotation | None = None
    kept: Tensor | None = None
    # clip (RoundingConfig.clip): like lq.scale, learned factor - 1 on the grid's max / min
    clip_max: Tensor | None = None
    clip_min: Tensor | None = None

    @classmethod
    def start(cls, lq: LayerQuant, weight: Tensor, cfg: RoundingConfig) -> _Tunable:
        """weight: the original (out, in) weight, for the rtn start. For a rotated layer the
        grid holds W_r R (the unkept weights, rotated), so that is where rtn starts from."""
        n, device = lq.codes.shape[1], weight.device
        s, z = (per_column(t, n, lq.group_size).to(device) for t in (lq.scale, lq.zero))
        R = kept = None
        start = weight.detach().float()
        if lq.rotation is not None:
            R = stored_rotation(n, lq.rotation).to(device)
            mask = lq.keep_mask.to(device)
            kept = torch.zeros_like(start).masked_scatter(mask, lq.kept_values.to(device).float())
            start = R.apply(torch.where(mask, 0.0, start))
        if cfg.start == "gptq":  # GPTQ's integer levels: one step moves a weight one level
            levels, bound = lq.codes.to(device).float() - z, 1.0
        else:  # the weight on the grid: an offset in [-0.5, 0.5] rounds it down or up
            levels, bound = start / s, 0.5
        offset = torch.zeros_like(levels, requires_grad=True)
        factor = torch.zeros_like(
            lq.scale, device=device, requires_grad=cfg.scales and not cfg.clip
        )
        clip = [torch.zeros_like(factor, requires_grad=True) for _ in range(2)] if cfg.clip else []
        return cls(lq, levels, -z, 2**lq.bits - 1 - z, bound, offset, factor, R, kept, *clip)

    def params(self) -> list[Tensor]:
        clip = [self.clip_max, self.clip_min] if self.clip_max is not None else []
        return [self.offset] + ([self.factor] if self.factor.requires_grad else []) + clip

    def clamp_(self) -> None:
        self.offset.clamp_(-self.bound, self.bound)
        for factor in (self.factor, self.clip_max, self.clip_min):
            if factor is not None:
                factor.clamp_(-0.5, 0.5)

    def _clipped(self) -> tuple[Tensor, Tensor, Tensor]:
        """(scale, zero, code) on the grid whose ends are GPTQ's times the clip factors.

        The weight being rounded is levels * s (the rtn start's weight, or GPTQ's level);
        with both factors at 0 the grid, the zero and the codes are GPTQ's. The scale is
        rounded to fp16 and the zero to an integer with straight-through estimators: the
        search sees the weight export stores, and the factors learn through both."""
        s0, z0 = self.lq.scale.to(self.levels.device), self.lq.zero.to(self.levels.device)
        maxq = 2**self.lq.bits - 1
        top, bottom = (maxq - z0) * s0 * (1 + self.clip_max), -z0 * s0 * (1 + self.clip_min)
        scale = (top - bottom) / maxq
        scale = scale + (scale.half().float() - scale).detach()  # as stored: fp16
        zero = -bottom / scale
        zero = torch.clamp(zero + (torch.round(zero) - zero).detach(), 0, maxq)
        n, g = self.levels.shape[1], self.lq.group_size
        z_col = per_column(zero, n, g)
        x = self.levels * per_column(s0 / scale, n, g) + self.offset  # exactly levels at 0
        x = x + (torch.round(x) - x).detach()  # straight-through rounding
        return scale, zero, torch.clamp(x + z_col, 0, maxq)

    def _scale(self) -> Tensor:
        n = self.levels.shape[1]
        return per_column(
            self.lq.scale.to(self.factor.device) * (1 + self.factor), n, self.lq.group_size
        )

    def weight(self, dtype: torch.dtype) -> Tensor:
        """The dequantized weight with the offsets applied (differentiable in them)."""
        if self.clip_max is not None:
            scale, zero, code = self._clipped()
            n, g = self.levels.shape[1], self.lq.group_size
            w = per_column(scale, n, g) * (code - per_column(zero, n, g))
        else:
            x = self.levels + self.offset
            x = x + (torch.round(x) - x).detach()  # straight-through rounding
            w = self._scale() * torch.clamp(x, self.low, self.high)
        if self.rotation is not None:  # back to the original basis, where the kept ones add
            return (self.rotation.unapply(w) + self.kept).to(dtype)
        kept = self.lq.keep_mask.to(w.device)
        w = w.masked_scatter(kept, self.lq.kept_values.to(w.device, w.dtype)) if kept.any() else w
        return w.to(dtype)

    def result(self) -> LayerQuant:
        """GPTQ's LayerQuant with the tuned codes (kept positions keep GPTQ's codes), and
        the tuned scale (and with clip, zero)."""
        lq = self.lq
        with torch.no_grad():
            if self.clip_max is not None:  # the grid as fit: scale in fp16, integer zero
                scale, zero, code = self._clipped()
                codes = code.round().to(torch.uint8).cpu()
                scale, zero = scale.cpu(), zero.round().cpu()
            else:
                moved = torch.clamp(torch.round(self.levels + self.offset), self.low, self.high)
                codes = (moved - self.low).round().to(torch.uint8).cpu()
                scale = (lq.scale * (1 + self.factor.cpu())).float()
                zero = lq.zero
        if lq.rotation is None:  # a rotated grid has no kept positions: all of it is tuned
            codes = torch.where(lq.keep_mask, lq.codes, codes)
        return LayerQuant(
            codes, scale, zero, lq.keep_mask, lq.kept_values, lq.bits, lq.hinv_diag,
            lq.group_size, lq.rotation,
        )  # fmt: skip


@torch.no_grad()
def model_loss(
    model: nn.Module, batches: list[Batch], weights: dict[str, Tensor] | None = None
) -> float:
    """Mean next-token cross-entropy of the model over the batches' loss tokens; with
    weights (parameter name -> tensor), of the model holding those instead of its own."""
    device = input_device(model)
    total, count = 0.0, 0
    for b in batches:
        ids = b.input_ids.to(device)
        kwargs = {"input_ids": ids, "attention_mask": b.attention_mask.to(device)}
        out = model(**kwargs) if weights is None else functional_call(model, weights, (), kwargs)
        logits = out.logits
        ce, mask = token_loss(logits, ids, b.loss_mask.to(device))
        total += float((ce * mask).sum())
        count += int(mask.sum())
    return total / max(count, 1)


def _block_loss(
    block: nn.Module, weights: dict[str, Tensor], inputs: list, targets: list[Tensor]
) -> Tensor:
    """Mean squared error of the block's output over the real tokens of the given batches."""
    total, count = 0.0, 0
    for (hidden, kwargs, mask), target in zip(inputs, targets):
        y = functional_call(block, weights, (hidden,), kwargs)
        y = y[0] if isinstance(y, tuple) else y
        diff = (y - target)[mask]
        total = total + diff.float().pow(2).sum()
        count += diff.numel()
    return total / max(count, 1)


def tune_block(
    block: nn.Module,
    layers: dict[str, LayerQuant],
    inputs: list,
    targets: list[Tensor],
    cfg: RoundingConfig,
) -> tuple[dict[str, LayerQuant], float, float]:
    """Tune one block's rounding -> (tuned layers, loss before, loss after) on all batches.

    layers: block-relative Linear name -> GPTQ's LayerQuant. inputs: (hidden, kwargs, mask)
    per batch from the quantized model; targets: the fp block's outputs on the fp model's
    hidden states. Returns GPTQ's layers unchanged when tuning did not beat their loss.
    """
    device, dtype = next(block.parameters()).device, next(block.parameters()).dtype
    tunables = {
        n: _Tunable.start(lq, block.get_submodule(n).weight, cfg) for n, lq in layers.items()
    }

    def weights() -> dict[str, Tensor]:
        return {f"{n}.weight": t.weight(dtype) for n, t in tunables.items()}

    grads_were = {p: p.requires_grad for p in block.parameters()}
    for p in block.parameters():
        p.requires_grad_(False)
    try:
        gptq = {f"{n}.weight": lq.dequantize().to(device, dtype) for n, lq in layers.items()}
        with torch.no_grad():
            before = float(_block_loss(block, gptq, inputs, targets))
        order = random.Random(cfg.seed).sample(range(len(inputs)), len(inputs))
        params = [p for t in tunables.values() for p in t.params()]
        for step in range(cfg.steps):
            j = order[step % len(order)]
            loss = _block_loss(block, weights(), [inputs[j]], [targets[j]])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for v, g in zip(params, grads):
                    v.sub_(cfg.step_size * torch.sign(g))
                for t in tunables.values():
                    t.clamp_()
        with torch.no_grad():
            after = float(_block_loss(block, weights(), inputs, targets))
    finally:
        for p, flag in grads_were.items():
            p.requires_grad_(flag)
    if not after < before:
        return dict(layers), before, before
    return {n: t.result() for n, t in tunables.items()}, before, after


def _load(linear: nn.Module, weight: Tensor) -> None:
    with torch.no_grad():
        linear.weight.copy_(weight.to(linear.weight.device, linear.weight.dtype))


def tune_rounding(
    model: nn.Module,
    batches: list[Batch],
    result: QuantResult,
    cfg: RoundingConfig,
    progress: Progress | None = None,
    check: list[Batch] | None = None,
) -> QuantResult:
    """A copy of `result` whose unkept weights' rounding is tuned block by block.

    check: batches held out of `batches` (loss on their answers); a block's tuning is kept
    only if the quantized model's loss on them does not rise. The whole model then runs
    quantized during the pass, and a copy of its Linear weights is held in host memory to
    restore them.
    The model's weights are left as they were; the returned result's logs["rounding"].block_losses hold
    each block's calibration loss before and after, check_losses the model's check loss
    with GPTQ's and with the tuned rounding of that block.
    """
    progress = progress or no_progress
    t0 = time.perf_counter()
    linears = quantizable_linears(model)
    name_of = {id(m): n for n, m in linears.items()}
    missing = [n for n in linears if n not in result.layers]
    if missing:
        raise TacqError(f"No quantized weights for {missing[0]}: quantize the model first.")
    blocks = decoder_layers(model)
    fp_inputs = capture_block_inputs(model, batches)
    q_inputs = fp_inputs
    # in host memory: on a GPU the model's own weights would otherwise take twice the room
    fp = {n: m.weight.detach().to("cpu", copy=True) for n, m in linears.items()} if check else {}
    tuned: dict[str, LayerQuant] = {}
    losses: list[tuple[float, float]] = []
    checks: list[tuple[float, float]] = []
    try:
        if check:  # the model as GPTQ left it; each block goes fp only for its own turn
            for n, m in linears.items():
                _load(m, result.layers[n].dequantize())
            current = model_loss(model, check)
        for i, block in enumerate(blocks):
            progress(i / len(blocks), f"rounding block {i + 1}/{len(blocks)}")
            full = {rel: name_of[id(m)] for rel, m in block.named_modules() if id(m) in name_of}
            layers = {rel: result.layers[name] for rel, name in full.items()}
            originals = (
                {} if check else {n: p.detach().clone() for n, p in block.named_parameters()}
            )
            try:
                for rel, name in full.items() if check else ():
                    _load(block.get_submodule(rel), fp[name])
                targets = _run_block(block, fp_inputs)
                done, before, after = tune_block(block, layers, q_inputs, targets, cfg)
                for rel, lq in done.items():
                    _load(block.get_submodule(rel), lq.dequantize())
                if check:
                    with_tuned = model_loss(model, check) if after < before else current
                    checks.append((current, with_tuned))
                    if with_tuned > current:  # fits the block, hurts the model: GPTQ's stays
                        done, after = dict(layers), before
                        for rel, lq in done.items():
                            _load(block.get_submodule(rel), lq.dequantize())
                    current = min(current, with_tuned)
                losses.append((before, after))
                q_out = _run_block(block, q_inputs)
            finally:
                with torch.no_grad():
                    for n, p in block.named_parameters() if originals else ():
                        p.copy_(originals[n])
            tuned |= {full[rel]: lq for rel, lq in done.items()}
            fp_inputs = [(h, kw, m) for h, (_, kw, m) in zip(targets, fp_inputs)]
            q_inputs = [(h, kw, m) for h, (_, kw, m) in zip(q_out, q_inputs)]
    finally:
        for n, m in linears.items() if check else ():
            _load(m, fp[n])
    out = QuantResult(
        {n: tuned[n] for n in result.layers},
        result.cfg,
        result.seconds + time.perf_counter() - t0,
        dict(result.layer_seconds),
        logs={**result.logs, "rounding": RoundingLog(losses, checks)},
    )
    kept = sum(a < b for b, a in losses)
    progress(1.0, f"rounding: {kept}/{len(blocks)} blocks tuned, {time.perf_counter() - t0:.0f} s")
    return out
