"""A quantized variant of a model and the typed spec of how it was made.

The spec is what a packed export writes into its quantization_config and reads back
field for field, so a variant restored from disk says exactly what the in-memory one did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from torch import nn

from tacq.formats.grid import DEFAULT_DAMP, METHODS, GPTQConfig
from tacq.formats.packed import PackedLayers, packed_model, packed_modules
from tacq.formats.sizes import SizeReport, size_report
from tacq.memory import resident_bytes
from tacq.models import quantizable_linears, unquantized_params
from tacq.quant.quantize import QuantResult
from tacq.quant.recipe import FIT_TEXTS, Recipe


@dataclass(frozen=True)
class VariantSpec:
    """A tacq.quant.recipe.Recipe's fields plus where the variant came from: the record a packed
    checkpoint writes as its quantization_config (kept flat, as checkpoints always had it)."""

    bits: int
    ratio: float  # share of weights kept in 16 bits; 0: plain GPTQ / RTN
    metric: str | None  # saliency metric that picked them; None when nothing is kept
    method: str = "gptq"  # gptq or rtn; or a peer's name (hqq, autoround) for its variants
    group_size: int | None = None  # None: per-channel scales (the only format today)
    task: str | None = None
    examples: str | None = None  # digest of the calibration examples
    base_model: str | None = None  # fingerprint of the model it was made from
    damp: float = DEFAULT_DAMP  # GPTQ's Hessian damping (files before stop 29: the default)
    rounding_steps: int = 0  # steps of tuned rounding after GPTQ (tacq.quant.rounding); 0: none
    rounding_check: bool = False  # tuning kept per block only where held-aside loss fell
    rounding_clip: bool = False  # the rounding pass also tuned each grid's ends (scale, zero)
    rotation: str | None = None  # unkept weights quantized in a rotated basis (tacq.quant.rotation)
    rotation_seed: int = 0  # each Linear's R is drawn from this and its name
    distill_epochs: int = 0  # epochs of scales distilled from the fp model (tacq.quant.distill)
    act_order: bool = False  # GPTQ's columns by decreasing diag(H)
    fit_text: str = FIT_TEXTS[0]  # what rounding and distillation fitted on besides the task

    @classmethod
    def of(cls, recipe: Recipe, **origin) -> VariantSpec:
        """The spec of a variant made by `recipe`; origin: task, examples, base_model."""
        made = {f.name: getattr(recipe, f.name) for f in fields(recipe)}
        return cls(**made | {"metric": recipe.kept_metric}, **origin)

    @property
    def recipe(self) -> Recipe | None:
        """The recipe it was made by (None for a peer's variant: its package made it)."""
        if self.method not in METHODS:
            return None
        made = {f.name: getattr(self, f.name) for f in fields(Recipe)}
        return Recipe(**made | {"metric": self.metric or "tacq"})

    @property
    def name(self) -> str:
        """'tacq-3bit-0.35%' or 'gptq-2bit': the variant's default display name."""
        recipe = self.recipe
        if recipe is None:
            return f"{self.method}-{self.bits}bit" + (
                f"-g{self.group_size}" if self.group_size else ""
            )
        return recipe.name

    def to_config(self) -> dict:
        """Every field; those added after format 2 only when set, so the checkpoint of a
        recipe that does not use them is byte-identical to one written before."""
        config = asdict(self)
        for later in ("act_order", "fit_text", "rounding_clip"):
            if config[later] == getattr(VariantSpec, later):
                del config[later]
        return config

    @classmethod
    def from_config(cls, qc: dict) -> VariantSpec:
        """Read a quantization_config; format 1 of stop 13 and before named the digest
        'task_hash' and wrote no group_size."""
        known = {f.name: qc[f.name] for f in fields(cls) if f.name in qc}
        known.setdefault("examples", qc.get("task_hash"))
        known.setdefault("method", qc.get("method") or "gptq")
        return cls(**{"metric": None, "ratio": 0.0, **known, "bits": int(qc["bits"])})


@dataclass
class Variant:
    """A quantized copy of the model with how it was made and what it weighs."""

    name: str  # e.g. 'tacq-3bit-0.35%'
    model: nn.Module
    result: QuantResult
    size: SizeReport
    spec: VariantSpec
    peer: dict | None = None  # a peer's variant: its package, settings, format (no codes here)
    resident_bytes: int = 0  # memory it holds beyond the model it shares tensors with


def saved_base_model(folder: Path) -> str | None:
    """The fingerprint of the model a packed checkpoint was made from (its config says)."""
    import json

    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    return (config.get("quantization_config") or {}).get("base_model")


def load_variant(folder: Path, base: nn.Module | None = None) -> Variant:
    """A Variant back from a packed checkpoint (what the app keeps across restarts).

    Given `base`, the model it was made from, the variant shares base's unquantized
    tensors, exactly as when it was made; without, it is built from the file alone.
    """
    from tacq.formats.export import read_packed, read_packed_onto

    model, qc = read_packed(folder) if base is None else read_packed_onto(folder, base)
    spec = VariantSpec.from_config(qc)
    modules = packed_modules(model)
    shapes = [(m.out_features, m.in_features) for m in modules.values()]
    kept = [len(m.kept_index) for m in modules.values()]
    size = size_report(shapes, kept, spec.bits, unquantized_params(model), spec.group_size)
    cfg = GPTQConfig(bits=spec.bits, method=spec.method, group_size=spec.group_size)
    name = qc.get("variant_name") or folder.name
    layers = QuantResult(PackedLayers(modules), cfg)
    return Variant(name, model, layers, size, spec, resident_bytes=resident_bytes(model, base))


def build_variant(
    model: nn.Module, result: QuantResult, spec: VariantSpec, kept: list[int]
) -> Variant:
    """The variant of `model` carrying `result`, with its honest size (kept: per Linear)."""
    other = unquantized_params(model)
    shapes = [tuple(m.weight.shape) for m in quantizable_linears(model).values()]
    size = size_report(shapes, kept, spec.bits, other, spec.group_size)
    packed = packed_model(model, result.layers)
    owned = resident_bytes(packed, model)
    return Variant(spec.name, packed, _packed_result(packed, result), size, spec, None, owned)


def _packed_result(packed: nn.Module, result: QuantResult) -> QuantResult:
    """The same result read from the packed modules (no unpacked codes held); timings and
    a rounding pass's losses carried over."""
    layers = PackedLayers(packed_modules(packed))
    return replace(result, layers=layers, layer_seconds=dict(result.layer_seconds))
