"""Command-line flags generated from tacq.quant.recipe.Recipe's fields.

Why: the CLI's quantize flags restated the recipe's defaults as literals, and "was this
option given?" was decided by comparing against them. Here each flag is made from a field:
its name (`rounding_steps` -> `--rounding-steps`), its type, its choices and its default
come from the Recipe, and only the help text is written here. With `unset`, a flag left
out reads None, so a named preset fills exactly the fields the user did not give.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from tacq.circuit.saliency import METRICS
from tacq.circuit.select import BIT_WIDTHS
from tacq.formats.grid import GROUP_SIZES, METHODS
from tacq.formats.orthogonal import ROTATION_KINDS
from tacq.quant.recipe import FIT_TEXTS, PRESETS, Recipe

HELP = {
    "bits": "bit width",
    "metric": "saliency score that picks the kept weights",
    "ratio": "share of weights kept in 16 bits (0.0035 = 0.35%%; 0: plain quantizer)",
    "group_size": "one scale and zero per this many input columns; none is one per row, as "
    "the paper",
    "method": "quantizer of the unkept weights: masked GPTQ or round to nearest",
    "damp": "GPTQ's Hessian damping, a share of mean diag(H); more trusts short calibration "
    "text less (see bench/levers.py)",
    "act_order": "GPTQ quantizes the columns by decreasing Hessian diagonal",
    "rounding_steps": "then tune the unkept weights' rounding, this many steps per block "
    "(0: GPTQ's rounding)",
    "rounding_check": "with --rounding-steps: hold every 4th calibration batch out of the "
    "fit and keep a block's tuned rounding only if the model's answer loss on those does "
    "not rise",
    "rounding_clip": "with --rounding-steps: also tune each row's or group's grid ends (its "
    "scale and zero) instead of a scale factor",
    "rotation": "quantize the unkept weights in a random rotated input basis, the kept ones "
    "exact: hadamard is structured (a few KB per Linear), haar a dense n^2 matrix per Linear",
    "distill_epochs": "then distil every scale at once from the fp model's next-token "
    "distributions, this many epochs; every 4th calibration batch picks the epoch kept",
    "fit_text": "what tuned rounding and distillation fit on besides the task's examples: "
    "task+generic adds the bundled generic text outside the perplexity window",
}
CHOICES = {
    "bits": BIT_WIDTHS,
    "metric": tuple(METRICS),
    "group_size": GROUP_SIZES,
    "method": METHODS,
    "rotation": ROTATION_KINDS,
    "fit_text": FIT_TEXTS,
}
TYPES = {"int": int, "float": float, "str": str, "int | None": int, "str | None": str}
ALIASES = {"rotation": ("--rotate",)}  # the flag's name before the Recipe
SELECTION_FIELDS = ("bits", "group_size", "ratio", "metric")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_recipe_flags(
    p: argparse.ArgumentParser, names: tuple[str, ...] | None = None, unset: bool = False
) -> None:
    """One flag per Recipe field (names: only these), typed and defaulted from the field.
    unset: every default is None (a preset or the Recipe fills it in recipe_from_args)."""
    for f in fields(Recipe):
        if names is not None and f.name not in names:
            continue
        default = f.default if f.default is not MISSING else None
        shown = "none" if default is None else str(default).replace("%", "%%")
        kw: dict = {"dest": f.name, "default": None if unset else default}
        if f.type == "bool":
            kw["action"] = "store_true"
            kw["help"] = HELP[f.name]
        else:
            kw["type"] = TYPES[f.type]
            kw["help"] = f"{HELP[f.name]} (default {shown})"
            if f.name in CHOICES:
                kw["choices"] = CHOICES[f.name]
        p.add_argument(flag(f.name), *ALIASES.get(f.name, ()), **kw)


def add_settings_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--settings",
        default="measured",
        choices=PRESETS,
        help="the named recipe at --bits that the other options then change: measured "
        "(default: best measured across the bundled tasks, tacq.quant.recipe.MEASURED) or paper "
        "(the paper's settings)",
    )


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The preset named by --settings at --bits, with every recipe flag given applied."""
    given = {f.name: getattr(args, f.name, None) for f in fields(Recipe)}
    given = {k: v for k, v in given.items() if v is not None and v is not False}
    bits = given.get("bits", Recipe.bits)
    base = Recipe.preset(getattr(args, "settings", "measured"), bits)
    if given.get("method", base.method) != "gptq":
        base = base.without_gptq_levers()  # an option given beside --method rtn still counts
    return base.changed(**given)
