"""The unmasked reference quantization: dW for the scores, and the GPTQ / RTN baseline.

A reference is held, in memory and on disk, with its codes bit-packed as PackedLinear packs
them (bits/8 bytes per weight, not a code byte and a mask bool): a study keeps one per bit
width it visits. Its all-False mask and its unpacked codes are built only when read.

Two disk caches live here, beside the data they hold. The whole reference (packed codes,
scales, zeros, inverse-Hessian diagonals) is keyed by model, examples and settings. The grid
of the weights alone (scale and zero per row) depends only on the model, the bit width and
the search settings, so a masked run, or another task's reference, reuses it instead of
searching again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from tacq.cache import cache_key, load_checked, save_atomic, tacq_home
from tacq.data.calibration import CalibrationSet
from tacq.formats.grid import DEFAULT_DAMP, GPTQConfig, QParams, n_groups
from tacq.formats.held import PackedLayerQuant
from tacq.formats.packed import packed_row_bytes
from tacq.models import LoadedModel, quantizable_linears
from tacq.progress import Progress
from tacq.quant.quantize import GroupQuantizer, QuantResult, quantize_model

# In the reference cache key: files written with one uint8 per code (before packing) carry
# keys without it, so they are never matched, let alone read as packed codes.
REFERENCE_LAYOUT = "packed-codes"


def pack_reference(res: QuantResult) -> QuantResult:
    """The reference with every layer held packed; `res`'s unpacked layers are let go one by
    one as they are packed, so the two never exist whole together."""
    layers = {n: PackedLayerQuant.from_layer(res.layers.pop(n)) for n in list(res.layers)}
    return replace(res, layers=layers)


@dataclass
class References:
    """Unmasked quantizations of one model on one calibration set, per (bits, method)."""

    lm: LoadedModel
    calib: CalibrationSet
    exec_device: str | None = None  # stream GPTQ blocks through this device (large models)
    group_quantizer: GroupQuantizer | None = None  # None: quantize_group (benches: a yardstick)
    done: dict[tuple[int, str, int | None], QuantResult] = field(default_factory=dict)
    rotated: dict[tuple, dict[str, QParams]] = field(default_factory=dict)  # rotated_grid's

    def get(
        self,
        bits: int,
        method: str = "gptq",
        progress: Progress | None = None,
        group_size: int | None = None,
        damp: float = DEFAULT_DAMP,
        act_order: bool = False,
    ) -> QuantResult:
        """The reference at `bits` (group size, damping, act-order): from memory, the disk
        cache, or computed."""
        at = (bits, method, group_size, damp) + ((True,) if act_order else ())
        if at in self.done:
            return self.done[at]
        cfg = GPTQConfig(bits=bits, method=method, group_size=group_size, damp=damp,
                         act_order=act_order)  # fmt: skip
        key = cache_key(
            "ref", self.lm.fingerprint, self.calib.digest, asdict(self.calib.data_cfg), asdict(cfg),
            REFERENCE_LAYOUT,
        )  # fmt: skip
        path = tacq_home() / "quant" / f"{key[:32]}.safetensors"
        linears = quantizable_linears(self.lm.model)
        names = list(linears)
        shapes = {n: tuple(m.weight.shape) for n, m in linears.items()}
        res = load_reference(path, key, cfg, shapes)
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
                group_quantizer=self.group_quantizer,
            )
            res = pack_reference(res)
            save_reference(path, key, res)
            if known is None and self.reuses_grid(cfg):
                save_grid(qp_path, qp_key, res)
        elif progress:
            progress(1.0, f"{method} {bits}-bit reference: loaded from cache")
        self.done[at] = res
        return res

    def reuses_grid(self, cfg: GPTQConfig) -> bool:
        """Per channel, a row's grid is fitted once before GPTQ runs, so masked runs and
        other tasks can reuse it; group-wise grids are fitted inside the loop."""
        return cfg.group_size is None

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

    def rotated_grid(self, cfg: GPTQConfig, kind: str, seed: int = 0) -> dict[str, QParams] | None:
        """The per-channel grids of this model's weights in a rotated basis, as far as
        rotated runs found them (tacq.quant.rotation.quantize_rotated fills it in). In
        memory: auto-fit's candidates of one bit width share one basis."""
        if not self.reuses_grid(cfg):
            return None
        return self.rotated.setdefault((kind, seed, *_search(cfg)), {})

    def _grid_entry(self, cfg: GPTQConfig) -> tuple[Path, str]:
        """Where the grid is cached: weights, bit width and search settings only."""
        search = _search(cfg)
        device = str(self.exec_device or self.lm.device).split(":")[0]
        key = cache_key("qparams", self.lm.fingerprint, search, device)
        return tacq_home() / "quant" / f"qparams-{key[:32]}.safetensors", key


def _search(cfg: GPTQConfig) -> tuple:
    """What a per-channel grid depends on besides the weights: bit width and search."""
    return (cfg.bits, cfg.grid, cfg.max_shrink, cfg.norm)


def save_reference(path: Path, key: str, res: QuantResult) -> None:
    """The packed reference as held: packed.{name}, scale.{name}, zero.{name}, hinv.{name}."""
    tensors = {}
    for n, lq in res.layers.items():
        tensors |= {f"{part}.{n}": t for part, t in lq.held_tensors().items()}
    save_atomic(path, tensors, {"key": key, "seconds": repr(res.seconds)})


def load_reference(
    path: Path, key: str, cfg: GPTQConfig, shapes: dict[str, tuple[int, int]]
) -> QuantResult | None:
    """A cached reference if whole and of these layers' shapes (else it is deleted). The
    tensors are the file's own (maybe memory-mapped): nothing writes into them."""
    t = load_checked(path, key)
    if t is None:
        return None
    if not all(_whole(t, n, shape, cfg) for n, shape in shapes.items()):
        path.unlink(missing_ok=True)
        return None
    layers = {n: _read_layer(t, n, shape[1], cfg) for n, shape in shapes.items()}
    return QuantResult(layers, cfg)


def _read_layer(t: dict[str, Tensor], name: str, in_f: int, cfg: GPTQConfig) -> PackedLayerQuant:
    scale, zero, hinv = t[f"scale.{name}"], t[f"zero.{name}"], t.get(f"hinv.{name}")
    return PackedLayerQuant(t[f"packed.{name}"], scale, zero, cfg.bits, in_f, hinv, cfg.group_size)


def _whole(t: dict[str, Tensor], name: str, shape: tuple[int, int], cfg: GPTQConfig) -> bool:
    """Layer `name` is in the file, packed, with its qparams of the right shapes."""
    out_f, in_f = shape
    packed, scale, zero = (t.get(f"{part}.{name}") for part in ("packed", "scale", "zero"))
    if packed is None or scale is None or zero is None or packed.dtype != torch.uint8:
        return False
    qshape = (out_f,) if cfg.group_size is None else (out_f, n_groups(in_f, cfg.group_size))
    hinv = t.get(f"hinv.{name}")
    return (
        tuple(packed.shape) == (out_f, packed_row_bytes(in_f, cfg.bits))
        and tuple(scale.shape) == tuple(zero.shape) == qshape
        and (hinv is None or tuple(hinv.shape) == (in_f,))
    )


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
