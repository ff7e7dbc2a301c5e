"""The Quantize screen's lever choices and the one mapping between its widgets and a Recipe
(both ways), apart from the screen's layout and events."""

from __future__ import annotations

import gradio as gr

from tacq.formats.grid import DEFAULT_DAMP, GROUP_SIZES
from tacq.quant.recipe import Recipe

# 0 stands for none: one scale and zero per output row, as the paper
GROUP_CHOICES = [("one per row (paper)", 0)] + [(f"per {g} inputs", g) for g in GROUP_SIZES]


# GPTQ's damping of its Hessians' diagonal, as a share of its mean. The task's few
# calibration tokens leave the wide Linears' Hessians rank-deficient, and on 6 of 7 bundled
# tasks 10 % gave a lower held-out NLL at 2 bits than the paper's 1 % (bench/README.md).
DAMP_CHOICES = [("1 % (paper)", DEFAULT_DAMP), ("10 %", 0.1), ("30 %", 0.3), ("100 %", 1.0)]

# Tuned rounding after GPTQ (tacq.quant.rounding): each block's rounding and scales fit to its
# fp output on the examples plus the bundled generic text. At 2 bits it helped on antonyms
# and plurals and hurt on four other bundled tasks (bench/README.md): compare it with
# GPTQ's in the Evaluate tab. It adds minutes on a CPU. "checked" holds every 4th
# calibration batch out of the fit and keeps a block's tuning only where the model's answer
# loss on those does not rise: better than unchecked on 6 of 7 tasks at 2 bits, and the one
# fixed setting that beats the peers at matched bits on most tasks (6 of 7). "+ grid ends"
# also tunes each row's or group's max and min (its scale and zero), as AutoRound's clip.
ROUNDINGS = {  # (steps, checked, grid ends tuned)
    "gptq": (0, False, False),
    "tuned": (100, False, False),
    "checked": (100, True, False),
    "clip": (100, True, True),
}
ROUNDING_CHOICES = [
    ("GPTQ's (paper)", "gptq"),
    ("tuned + checked", "checked"),
    ("checked + grid ends", "clip"),
    ("tuned, 100 steps", "tuned"),
]

# The unkept weights quantized by GPTQ in a random rotated input basis, the kept ones exact
# in the original one (tacq.quant.rotation): with this structured (Hadamard) rotation, decided
# lower held-out NLL than the plain basis on 3 of 7 bundled tasks at 2 and at 3 bits, worse
# on one at 2 bits (bench/README.md), at no extra bits; a few KB per Linear in memory (the
# dense Haar R of `--rotate haar` would be n^2 floats).
BASIS_CHOICES = [("as is (paper)", "none"), ("rotated (Hadamard)", "hadamard")]

# Every scale then distilled at once from the fp model's next-token distributions
# (tacq.quant.distill), on the examples less every 4th batch plus the bundled generic text; the
# held-aside batch picks the epoch kept (or the start). See bench/README.md for what it did.
DISTILL_CHOICES = [("no (paper)", 0), ("2 epochs, checked", 2)]

# One choice that sets every lever below (tacq.presets): the paper's, or the per-row setting
# the benchmarks measured best at the chosen bits; touching a lever makes it "my own".
SETTINGS_CHOICES = [
    ("paper's", "paper"),
    ("best measured for these bits", "measured"),
    ("my own", "custom"),
]


def rounding_choice(recipe: Recipe) -> str:
    """The Rounding dropdown's value for a recipe's tuned rounding."""
    want = (recipe.rounding_steps, recipe.rounding_check, recipe.rounding_clip)
    for key, choice in ROUNDINGS.items():
        if choice == want:
            return key
    raise ValueError(
        f"The Rounding choices have no {recipe.rounding_steps} steps with "
        f"checked={recipe.rounding_check}, clip={recipe.rounding_clip}."
    )


def recipe_of_widgets(
    bits: int, metric: str, method: str, circuit: bool, group: int, damp: float,
    rounding: str, basis: str, distill: int, act_order: bool, pct: float,
) -> Recipe:  # fmt: skip
    """The screen's inputs (and the Circuit slider's ratio, in %) as the Recipe they make
    (0.35 % is the ratio 0.0035 the CLI and the benches use, not 0.0034999...). With RTN,
    the GPTQ-only inputs (greyed out) keep their values but do not count."""
    if method != "gptq":  # GPTQ's own levers are greyed out for RTN: their values are not used
        damp, rounding, basis, act_order = DEFAULT_DAMP, "gptq", "none", False
    steps, check, clip = ROUNDINGS[rounding]
    return Recipe(
        bits=int(bits), metric=metric, ratio=round(pct / 100, 10) if circuit else 0.0,
        group_size=int(group) or None, method=method, damp=float(damp),
        act_order=bool(act_order), rounding_steps=steps, rounding_check=check, rounding_clip=clip,
        rotation=None if basis == "none" else basis, distill_epochs=int(distill),
    )  # fmt: skip


def widgets_of_recipe(recipe: Recipe) -> tuple:
    """A Recipe back in the screen's inputs, in recipe_of_widgets' order less the bits:
    metric, quantizer, keep the circuit, scales, damping, rounding, basis, distillation,
    act-order, and the Circuit slider's ratio (%; left as it is when nothing is kept)."""
    pct = round(100 * recipe.ratio, 4) if recipe.ratio else gr.skip()
    return (
        recipe.metric, recipe.method, recipe.ratio > 0, recipe.group_size or 0, recipe.damp,
        rounding_choice(recipe), recipe.rotation or "none", recipe.distill_epochs,
        recipe.act_order, pct,
    )  # fmt: skip


def settings_values(name: str, bits: int) -> tuple:
    """What a named preset puts in the screen's inputs (widgets_of_recipe), and a line
    saying what it sets."""
    recipe = Recipe.preset(name, bits)
    line = (
        f"Settings: {recipe.describe()} "
        + ("(the paper's)." if name == "paper" else f"(measured best at {bits} bits).")
        + " The ratio is on the Circuit slider."
    )
    return (*widgets_of_recipe(recipe), line)
