"""A quantization recipe: everything that makes a variant, in one frozen value.

Why: a recipe used to be a selection plus nine keyword arguments, assembled by hand in the
CLI, the app and two benches, named in four string forms and mapped from presets in four
places. Here it is one type: Study.quantize reads it, a checkpoint records it (through
VariantSpec), the variant's name, its description in words and the bench's method key are
all written from it, and the named presets are Recipes. A new lever is one field here plus
the pass that reads it.

The bench key (`tacq_g64_p0.2_d0.1_ao_r100c_e2_roth`) is the recipe less its bit width:
the score (or plain quantizer when nothing is kept), then _g group size, _p kept percent,
_d damping, _ao act-order, _r tuned rounding steps (c: checked; _clip: the grid's ends
tuned with it), _e distillation epochs,
_ft when the fit passes use the task's examples only, and last the basis (_rot dense, _roth
Hadamard). Defaults are left out, so the key of the paper's TaCQ is `tacq`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

from tacq.circuit.saliency import METRICS
from tacq.circuit.select import DEFAULT_RATIO, Selection
from tacq.errors import TacqError
from tacq.formats.grid import DEFAULT_DAMP, METHODS, GPTQConfig
from tacq.formats.orthogonal import ROTATION_KINDS

# What a pass that fits (tuned rounding, distilled scales) is fitted on, besides the task's
# calibration examples less the checked ones: the bundled generic text outside the window
# perplexity is scored on (tacq.data.calibration), or nothing more. A task's few hundred tokens
# alone are overfit in an epoch or two (bench/README.md).
FIT_TEXTS = ("task+generic", "task")

# The settings the benchmarks measured best per bit width, by the written rule of
# bench/findings.py `preset_pick`: among the settings the Quantize screen can make with
# one scale per row (bits per weight stay near the bit width) that were measured on every
# bundled task, the lowest mean rank of dev-split answer NLL. A test checks these against
# that rule on the committed results, so a new measurement that changes the winner fails
# until this table follows it. At 4 bits no lever was measured on every task, so the
# paper's settings stand.
MEASURED: dict[int, dict] = {
    2: {"ratio": 0.002, "damp": 0.1, "rotation": "hadamard"},
    3: {"damp": 0.1, "rotation": "hadamard"},
    4: {},
}
PRESETS = ("paper", "measured")


@dataclass(frozen=True)
class Recipe:
    """How one variant is made from a model and a calibration set."""

    bits: int = 2  # bit width of the quantized weights
    metric: str = "tacq"  # the score that picks the weights kept in 16 bits
    ratio: float = DEFAULT_RATIO  # share of all quantizable weights kept; 0: plain quantizer
    group_size: int | None = None  # input columns per scale and zero; None: one per row
    method: str = "gptq"  # the quantizer of the rest: gptq (masked) or rtn
    damp: float = DEFAULT_DAMP  # GPTQ's Hessian damping, a share of mean diag(H)
    act_order: bool = False  # GPTQ quantizes columns by decreasing diag(H)
    rounding_steps: int = 0  # then tune the unkept weights' rounding (tacq.quant.rounding); 0: none
    rounding_check: bool = False  # keep a block's tuning only where held-aside loss did not rise
    # the rounding pass also tunes each row's or group's grid ends (scale and zero) instead
    # of a scale factor: AutoRound's clip, on TaCQ's grid with the circuit frozen
    rounding_clip: bool = False
    rotation: str | None = None  # unkept weights quantized in a rotated basis (tacq.quant.rotation)
    distill_epochs: int = (
        0  # then distil every scale from the fp model (tacq.quant.distill); 0: none
    )
    fit_text: str = FIT_TEXTS[0]  # what rounding and distillation fit on besides the task

    def __post_init__(self) -> None:
        Selection(self.metric, self.bits, self.ratio, self.group_size)  # checks them
        if self.method not in METHODS:
            raise TacqError(f"Quantizer must be one of {', '.join(METHODS)} (got {self.method!r}).")
        if self.method == "rtn":  # RTN has no Hessian: one damping, so one name and one cache
            object.__setattr__(self, "damp", DEFAULT_DAMP)
        GPTQConfig(bits=self.bits, method=self.method, damp=self.damp)  # checks the damping
        if self.rotation is not None and self.rotation not in ROTATION_KINDS:
            kinds = ", ".join(ROTATION_KINDS)
            raise TacqError(f"Unknown rotation {self.rotation!r}: one of {kinds}.")
        gptq_only = {"A rotated basis": self.rotation, "Tuned rounding": self.rounding_steps,
                     "Act-order": self.act_order}  # fmt: skip
        for what, used in gptq_only.items():
            if used and self.method != "gptq":
                raise TacqError(f"{what} is for GPTQ (its Hessians or its grid), not RTN.")
        if self.rounding_steps < 0:
            raise TacqError(
                f"Tuned rounding needs 0 (none) or at least 1 step (got {self.rounding_steps})."
            )
        if self.distill_epochs < 0:
            raise TacqError(
                f"Distillation needs 0 (none) or at least 1 epoch (got {self.distill_epochs})."
            )
        if self.rounding_check and not self.rounding_steps:
            raise TacqError(
                "A rounding check needs tuned rounding: rounding_check needs rounding_steps "
                "(--rounding-check needs --rounding-steps: how many steps to tune)."
            )
        if self.rounding_clip and not self.rounding_steps:
            raise TacqError(
                "Tuning the grid's ends is part of tuned rounding: rounding_clip needs "
                "rounding_steps (--rounding-clip needs --rounding-steps)."
            )
        if self.fit_text not in FIT_TEXTS:
            raise TacqError(
                f"Fit text must be one of {', '.join(FIT_TEXTS)} (got {self.fit_text!r})."
            )

    # ------------------------------------------------------------- what the passes read

    @property
    def selection(self) -> Selection:
        return Selection(self.metric, self.bits, self.ratio, self.group_size)

    @property
    def gptq_config(self) -> GPTQConfig:
        return GPTQConfig(
            bits=self.bits, method=self.method, group_size=self.group_size, damp=self.damp,
            act_order=self.act_order,
        )  # fmt: skip

    @property
    def kept_metric(self) -> str | None:
        """The score that picked the kept weights; None when nothing is kept."""
        return self.metric if self.ratio else None

    def changed(self, **changes) -> Recipe:
        return replace(self, **changes)

    def without_gptq_levers(self) -> Recipe:
        """The recipe with GPTQ's own levers at their defaults (damping, act-order, tuned
        rounding, a rotated basis): what a preset gives RTN, which has no Hessian to damp
        or rotate and no GPTQ grid to tune (the screen greys them out for RTN; the CLI
        drops a preset's when --method rtn is given)."""
        return replace(self.without_rounding(), damp=DEFAULT_DAMP, act_order=False, rotation=None)

    def without_rounding(self) -> Recipe:
        """The recipe with GPTQ's own rounding: no tuned pass, so its check and grid ends go
        with its steps (the three fields mean nothing apart)."""
        return replace(self, rounding_steps=0, rounding_check=False, rounding_clip=False)

    @classmethod
    def of(cls, sel: Selection, **changes) -> Recipe:
        """The recipe quantizing a Selection's circuit and format, other fields as given."""
        return cls(bits=sel.bits, metric=sel.metric, ratio=sel.ratio,
                   group_size=sel.group_size, **changes)  # fmt: skip

    # ------------------------------------------------------------------ named presets

    @classmethod
    def preset(cls, name: str, bits: int) -> Recipe:
        """'paper' (the paper's settings) or 'measured' (best measured at these bits)."""
        if name == "paper":
            return cls(bits=bits)
        if name == "measured":
            return cls(bits=bits, **MEASURED.get(bits, {}))
        raise TacqError(f"Unknown preset {name!r}: one of {', '.join(PRESETS)}.")

    # ---------------------------------------------------------------- in words and keys

    @property
    def name(self) -> str:
        """'tacq-3bit-0.35%' or 'gptq-2bit-g128': the variant's default display name."""
        fmt = f"{self.bits}bit" + (f"-g{self.group_size}" if self.group_size else "")
        if self.damp != DEFAULT_DAMP:
            fmt += f"-d{self.damp:g}"
        fmt += "-ao" * self.act_order
        if self.rounding_steps:
            fmt += f"-r{self.rounding_steps}" + ("c" if self.rounding_check else "")
            fmt += "-clip" * self.rounding_clip
        if self.distill_epochs:
            fmt += f"-e{self.distill_epochs}"
        fmt += "-ft" * (self.fit_text != FIT_TEXTS[0])
        if self.rotation:
            fmt += "-roth" if self.rotation == "hadamard" else f"-rot-{self.rotation}"
        if not self.ratio:
            return f"{self.method}-{fmt}"
        return f"{self.metric}-{fmt}-{100 * self.ratio:.2f}%"

    def describe(self) -> str:
        """'0.20 % kept, damping 10 %, rotated (Hadamard)': the settings in the screen's
        words (the bit width and the score are said beside it)."""
        parts = [f"{100 * self.ratio:.2f} % kept", f"damping {100 * self.damp:g} %"]
        parts += [f"scales per {self.group_size} inputs"] if self.group_size else []
        parts += ["act-order"] if self.act_order else []
        if self.rounding_steps:
            checked = ", checked" * self.rounding_check
            what = "rounding and grid ends" if self.rounding_clip else "rounding"
            parts.append(f"{what} tuned {self.rounding_steps} steps{checked}")
        parts += [f"rotated ({self.rotation.capitalize()})"] if self.rotation else []
        parts += [f"scales distilled {self.distill_epochs} epochs"] if self.distill_epochs else []
        parts += ["fitted on the task's examples only"] if self.fit_text != FIT_TEXTS[0] else []
        return ", ".join(parts)

    def key(self) -> str:
        """The bench's method key: the recipe less its bit width (see the module doc)."""
        if self.ratio and self.method != "gptq":
            raise TacqError(
                "The bench keys name masked GPTQ only: a kept circuit with RTN has none."
            )
        key = self.metric if self.ratio else self.method
        key += f"_g{self.group_size}" if self.group_size else ""
        if self.ratio and self.ratio != DEFAULT_RATIO:
            key += f"_p{round(100 * self.ratio, 6)!r}"
        key += f"_d{self.damp:g}" if self.damp != DEFAULT_DAMP else ""
        key += "_ao" * self.act_order
        if self.rounding_steps:
            key += f"_r{self.rounding_steps}" + "c" * self.rounding_check
            key += "_clip" * self.rounding_clip
        key += f"_e{self.distill_epochs}" if self.distill_epochs else ""
        key += "_ft" * (self.fit_text != FIT_TEXTS[0])
        return key + {None: "", "haar": "_rot", "hadamard": "_roth"}[self.rotation]

    @classmethod
    def from_key(cls, key: str, bits: int = 2) -> Recipe:
        """The recipe a bench method key names, at `bits`; a TacqError for any other text."""
        m = KEY.fullmatch(key)
        if m is None:
            raise TacqError(f"{key!r} is not a recipe key (e.g. tacq_g128_p0.2_d0.1_roth).")
        base, plain = m["base"], m["base"] in METHODS
        if plain and m["p"]:
            raise TacqError(f"{key!r}: a plain quantizer keeps nothing, so it takes no _p.")
        return cls(
            bits=bits,
            metric="tacq" if plain else base,
            ratio=0.0 if plain else float(m["p"]) / 100 if m["p"] else DEFAULT_RATIO,
            group_size=int(m["g"]) if m["g"] else None,
            method=base if plain else "gptq",
            damp=float(m["d"]) if m["d"] else DEFAULT_DAMP,
            act_order=bool(m["ao"]),
            rounding_steps=int(m["r"] or 0),
            rounding_check=bool(m["c"]),
            rounding_clip=bool(m["clip"]),
            rotation={None: None, "_rot": "haar", "_roth": "hadamard"}[m["rot"]],
            distill_epochs=int(m["e"] or 0),
            fit_text=FIT_TEXTS[1] if m["ft"] else FIT_TEXTS[0],
        )

    # ------------------------------------------------------------------- as a record

    def to_config(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _alternatives(names) -> str:
    return "|".join(sorted(map(re.escape, names), key=len, reverse=True))


_NUM = r"\d+(?:\.\d+)?"
KEY = re.compile(
    rf"(?P<base>{_alternatives([*METHODS, *METRICS])})"
    rf"(?:_g(?P<g>\d+))?(?:_p(?P<p>{_NUM}))?(?:_d(?P<d>{_NUM}))?(?P<ao>_ao)?"
    rf"(?:_r(?P<r>[1-9]\d*)(?P<c>c)?(?P<clip>_clip)?)?(?:_e(?P<e>[1-9]\d*))?(?P<ft>_ft)?"
    rf"(?P<rot>_roth|_rot)?"
)
