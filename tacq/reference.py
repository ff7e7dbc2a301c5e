"""The unmasked reference quantization: dW for the scores, and the GPTQ / RTN baseline.

Two disk caches live here, beside the data they hold. The whole reference (codes, scales,
zeros, inverse-Hessian diagonals) is keyed by model, examples and settings. The grid of the
weights alone (scale and zero per row) depends only on the model, the bit width and the
search settings, so a masked run, or another task's reference, reuses it instead of
searching again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tacq.cache import cache_key, load_checked, save_atomic, tacq_home
from tacq.calibration import CalibrationSet
from tacq.gptq import DEFAULT_DAMP, GPTQConfig, LayerQuant, QParams
from tacq.models import LoadedModel, quantizable_linears
from tacq.progress import Progress
from tacq.quantize import QuantResult, quantize_model


@dataclass
class References:
    """Unmasked quantizations of one model on one calibration set, per (bits, method)."""

    lm: LoadedModel
    calib: CalibrationSet
    exec_device: str | None = None  # stream GPTQ blocks through this device (large models)
    fast: bool = True  # False: the pre-stacking GPTQ path, no reused search (benches)
    done: dict[tuple[int, str, int | None], QuantResult] = field(default_factory=dict)

    def get(
        self,
        bits: int,
        method: str = "gptq",
        progress: Progress | None = None,
        group_size: int | None = None,
        damp: float = DEFAULT_DAMP,
    ) -> QuantResult:
        """The reference at `bits` (group size, damping): from memory, the disk cache, or
        computed."""
        if (bits, method, group_size, damp) in self.done:
            return self.done[(bits, method, group_size, damp)]
        cfg = GPTQConfig(bits=bits, method=method, group_size=group_size, damp=damp)
        key = cache_key(
            "ref", self.lm.fingerprint, self.calib.digest, asdict(self.calib.data_cfg), asdict(cfg)
        )
        path = tacq_home() / "quant" / f"{key[:32]}.safetensors"
        names = list(quantizable_linears(self.lm.model))
        res = load_reference(path, key, cfg, names)
        if res is None:
            qp_path, qp_key = self._grid_entry(cfg)
            known = load_grid(qp_path, qp_key, names) if self.reuses_grid(cfg) else None
            res = quantize_model(
                self.lm.model,
                self.calib.batches(answer_only=False),
                cfg,
                progress=progress,
                exec_device=self.exec_device,
                unmasked=known,  # e.g. found by another task's study of this model
                fast=self.fast,
            )
            save_reference(path, key, res)
            if known is None and self.reuses_grid(cfg):
                save_grid(qp_path, qp_key, res)
        elif progress:
            progress(1.0, f"{method} {bits}-bit reference: loaded from cache")
        self.done[(bits, method, group_size, damp)] = res
        return res

    def reuses_grid(self, cfg: GPTQConfig) -> bool:
        """Per channel, a row's grid is fitted once before GPTQ runs, so masked runs and
        other tasks can reuse it; group-wise grids are fitted inside the loop."""
        return self.fast and cfg.group_size is None

    def unmasked_grid(self, cfg: GPTQConfig) -> dict[str, QParams] | None:
        """The unmasked grid for a masked run, if a reference already found it (no work)."""
        if not self.reuses_grid(cfg):
            return None
        # per channel the grid depends on the weights alone, so any damping's reference has it
        ref = next((r for k, r in self.done.items() if k[:3] == (cfg.bits, cfg.method, None)), None)
        if ref is not None:
            return ref.qparams()
        path, key = self._grid_entry(cfg)
        return load_grid(path, key, list(quantizable_linears(self.lm.model)))

    def _grid_entry(self, cfg: GPTQConfig) -> tuple[Path, str]:
        """Where the grid is cached: weights, bit width and search settings only."""
        search = (cfg.bits, cfg.grid, cfg.max_shrink, cfg.norm)
        device = str(self.exec_device or self.lm.device).split(":")[0]
        key = cache_key("qparams", self.lm.fingerprint, search, device)
        return tacq_home() / "quant" / f"qparams-{key[:32]}.safetensors", key


def save_reference(path: Path, key: str, res: QuantResult) -> None:
    tensors = {}
    for n, lq in res.layers.items():
        tensors |= {f"codes.{n}": lq.codes, f"scale.{n}": lq.scale, f"zero.{n}": lq.zero}
        if lq.hinv_diag is not None:
            tensors[f"hinv.{n}"] = lq.hinv_diag
    save_atomic(path, tensors, {"key": key, "seconds": repr(res.seconds)})


def load_reference(path: Path, key: str, cfg: GPTQConfig, names: list[str]) -> QuantResult | None:
    """A cached reference if whole and matching the layer names (a partial one is deleted)."""
    t = load_checked(path, key)
    if t is None:
        return None
    if any(f"codes.{n}" not in t for n in names):
        path.unlink(missing_ok=True)
        return None
    layers = {}
    for n in names:
        codes = t[f"codes.{n}"]
        empty = torch.zeros_like(codes, dtype=torch.bool)
        no_values = torch.zeros(0, dtype=torch.float16)
        scale, zero, hinv = t[f"scale.{n}"], t[f"zero.{n}"], t.get(f"hinv.{n}")
        layers[n] = LayerQuant(codes, scale, zero, empty, no_values, cfg.bits, hinv, cfg.group_size)
    return QuantResult(layers, cfg)


def save_grid(path: Path, key: str, res: QuantResult) -> None:
    tensors = {}
    for n, (scale, zero) in res.qparams().items():
        tensors |= {f"scale.{n}": scale, f"zero.{n}": zero}
    save_atomic(path, tensors, {"key": key})


def load_grid(path: Path, key: str, names: list[str]) -> dict[str, QParams] | None:
    t = load_checked(path, key)
    if t is None or any(f"scale.{n}" not in t or f"zero.{n}" not in t for n in names):
        return None
    return {n: (t[f"scale.{n}"], t[f"zero.{n}"]) for n in names}
