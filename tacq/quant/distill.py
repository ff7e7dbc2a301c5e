"""Tune every scale of the quantized model at once, against the fp model's distributions.

GPTQ fits each Linear to its own output and tuned rounding (tacq.quant.rounding) each block to
its own; what one block loses and later blocks amplify is seen by neither. This pass gives
each scale of every quantized Linear a learned factor, and Adam moves all of them
together to lower the KL divergence from the fp model's next-token distributions over the
calibration tokens: a distillation through the scales only (the idea of EfficientQAT's
end-to-end stage, Chen et al. 2024, here on TaCQ's grid). Codes, zeros and kept weights
stay as they are, so the number format, the packed export and the honest bytes do not
change; optionally the kept 16-bit weights are tuned too (their count and places stay).

A lower loss on a few hundred calibration tokens need not be a better model. Given check
batches (calibration examples left out of the fit, loss on their answers), the epoch
with the lowest check loss is kept, the start included: the pass never returns a model
whose check loss is higher than the one it was given.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from tacq.data.batches import Batch
from tacq.errors import TacqError
from tacq.formats.grid import LayerQuant, per_column
from tacq.formats.orthogonal import Rotation, stored_rotation
from tacq.models import input_device
from tacq.progress import Progress, no_progress
from tacq.quant.quantize import QuantResult
from tacq.quant.rounding import model_loss


@dataclass(frozen=True)
class DistillLog:
    """A distillation pass's check loss at the start and after each epoch, and which of them
    was kept (0: the start); QuantResult.logs["distill"]."""

    checks: list[float]
    kept: int | None


@dataclass(frozen=True)
class DistillConfig:
    # passes over the fit batches, one Adam step per batch. On capitals at 3 bits (g64,
    # rotated) the held-aside answer loss fell in the first epoch and rose after it while
    # the fit KL kept falling; at 5e-4 it never fell below the start in 4 epochs
    epochs: int = 2
    lr: float = 1e-3  # Adam's step on each scale's log factor (and on kept values)
    kept: bool = False  # also tune the kept 16-bit weights' values
    seed: int = 0  # order in which the batches are visited

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise TacqError(f"Distillation needs at least 1 epoch (got {self.epochs}).")
        if not self.lr > 0:
            raise TacqError(f"Distillation's learning rate must be positive (got {self.lr}).")


@dataclass
class _Scaled:
    """One quantized Linear with a learned log factor per scale (and its kept values)."""

    lq: LayerQuant
    levels: Tensor  # (out, in) codes - zero, fp32: the grid in steps of the scale
    log_factor: Tensor  # like lq.scale, learned
    kept_values: Tensor  # (k,) fp32, learned when DistillConfig.kept
    mask: Tensor  # (out, in) bool: kept places
    rotation: Rotation | None

    @classmethod
    def start(cls, lq: LayerQuant, device: torch.device, tune_kept: bool) -> _Scaled:
        n = lq.codes.shape[1]
        levels = lq.codes.to(device).float() - per_column(lq.zero.to(device), n, lq.group_size)
        R = None
        if lq.rotation is not None:
            R = stored_rotation(n, lq.rotation).to(device)
        log_factor = torch.zeros_like(lq.scale, device=device, requires_grad=True)
        kept = lq.kept_values.to(device).float().requires_grad_(tune_kept)
        return cls(lq, levels, log_factor, kept, lq.keep_mask.to(device), R)

    def params(self) -> list[Tensor]:
        return [self.log_factor] + ([self.kept_values] if self.kept_values.requires_grad else [])

    def scale(self) -> Tensor:
        return self.lq.scale.to(self.log_factor.device) * self.log_factor.exp()

    def weight(self, dtype: torch.dtype) -> Tensor:
        """The dequantized weight (LayerQuant.dequantize), differentiable in the factors."""
        n = self.levels.shape[1]
        w = per_column(self.scale(), n, self.lq.group_size) * self.levels
        kept = torch.zeros_like(w).masked_scatter(self.mask, self.kept_values)
        if self.rotation is not None:  # back to the original basis, where the kept ones add
            return (self.rotation.unapply(w) + kept).to(dtype)
        return torch.where(self.mask, kept, w).to(dtype)

    def result(self) -> LayerQuant:
        """The LayerQuant with the tuned scales (fp16, as the export stores them)."""
        lq = self.lq
        with torch.no_grad():
            scale = self.scale().cpu().half().float()
            kept = self.kept_values.detach().cpu().half()
        return LayerQuant(
            lq.codes, scale, lq.zero, lq.keep_mask, kept, lq.bits, lq.hinv_diag,
            lq.group_size, lq.rotation,
        )  # fmt: skip


def distill_bytes(model: nn.Module, fit: list[Batch]) -> int:
    """Memory the pass holds beside the model: per quantized weight its grid, the weight
    built from it and autograd's copies (fp32); the fp model's log-probabilities of every
    fit token."""
    from tacq.models import quantizable_linears

    weights = sum(m.weight.numel() for m in quantizable_linears(model).values())
    vocab = model.get_output_embeddings().weight.shape[0]
    tokens = sum(b.input_ids.numel() for b in fit)
    return 16 * weights + 4 * vocab * tokens


def _kl_to_teacher(logits: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens of KL(teacher || model); teacher holds log-probabilities."""
    logp = torch.log_softmax(logits.float(), -1)
    kl = (teacher.exp() * (teacher - logp)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def tune_scales(
    model: nn.Module,
    result: QuantResult,
    fit: list[Batch],
    cfg: DistillConfig,
    check: list[Batch] | None = None,
    progress: Progress | None = None,
) -> QuantResult:
    """Distil the fp model into result's scales -> a QuantResult with only scales (and,
    with cfg.kept, kept values) changed. model holds the original weights and is left as
    it is; fit are full-sequence batches, check answer-loss batches kept out of the fit."""
    if not fit:
        raise TacqError("Distillation needs at least one calibration batch to fit on.")
    progress = progress or no_progress
    t0 = time.perf_counter()
    device, dtype = input_device(model), next(model.parameters()).dtype
    layers = {n: _Scaled.start(lq, device, cfg.kept) for n, lq in result.layers.items()}
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        teachers = [_teacher(model, b, device) for b in fit]

        def weights() -> dict[str, Tensor]:
            return {f"{n}.weight": s.weight(dtype) for n, s in layers.items()}

        best, kept, checks = None, 0, []  # with a check: the best epoch's factors, 0 the start
        if check:
            best_loss = start_loss = model_loss(model, check, weights())
            best, checks = _snapshot(layers), [start_loss]
        opt = torch.optim.Adam([p for s in layers.values() for p in s.params()], lr=cfg.lr)
        order = list(range(len(fit)))
        rng = random.Random(cfg.seed)
        for epoch in range(cfg.epochs):
            rng.shuffle(order)
            fit_kl = 0.0
            for j, i in enumerate(order):
                progress(
                    (epoch + j / len(order)) / cfg.epochs,
                    f"distilling scales: epoch {epoch + 1}/{cfg.epochs}",
                )
                b = fit[i]
                mask = b.attention_mask.to(device)
                logits = functional_call(
                    model,
                    weights(),
                    (),
                    {"input_ids": b.input_ids.to(device), "attention_mask": mask},
                ).logits
                loss = _kl_to_teacher(logits, teachers[i], mask.float())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                fit_kl += float(loss.detach()) / len(order)
            if not check:  # the last epoch is the one returned
                kept = epoch + 1
                continue
            loss = model_loss(model, check, weights())
            progress(
                (epoch + 1) / cfg.epochs,
                f"distilling scales: epoch {epoch + 1}/{cfg.epochs}, fit KL {fit_kl:.4f}, "
                f"check loss {loss:.4f} (start {start_loss:.4f}, best {min(loss, best_loss):.4f})",
            )
            checks.append(loss)
            if loss <= best_loss:
                best_loss, best, kept = loss, _snapshot(layers), epoch + 1
        if best is not None:
            _restore(layers, best)
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
    out = QuantResult({n: s.result() for n, s in layers.items()}, result.cfg)
    out.seconds = result.seconds + time.perf_counter() - t0
    out.logs = {**result.logs, "distill": DistillLog(checks, kept)}
    progress(1.0, f"distilled scales in {time.perf_counter() - t0:.0f} s")
    return out


@torch.no_grad()
def _teacher(model: nn.Module, b: Batch, device: torch.device) -> Tensor:
    ids, mask = b.input_ids.to(device), b.attention_mask.to(device)
    return torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)


def _snapshot(layers: dict[str, _Scaled]) -> dict[str, tuple[Tensor, Tensor]]:
    return {
        n: (s.log_factor.detach().clone(), s.kept_values.detach().clone())
        for n, s in layers.items()
    }


def _restore(layers: dict[str, _Scaled], snap: dict[str, tuple[Tensor, Tensor]]) -> None:
    with torch.no_grad():
        for n, (f, k) in snap.items():
            layers[n].log_factor.copy_(f)
            layers[n].kept_values.copy_(k)
