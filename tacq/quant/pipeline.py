"""A Recipe's passes, run in order: the quantizer (GPTQ or RTN, masked, rotated or the
cached reference), then tuned rounding, then distilled scales, each given its share of
one progress bar.

Why one place: a new lever is one Recipe field plus one `Pass` here, and every front end
(the app, the CLI, the benches, through `Study.quantize`) runs the same sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from tacq.data.batches import Batch
from tacq.progress import Progress, scaled
from tacq.quant.distill import DistillConfig, tune_scales
from tacq.quant.quantize import GroupQuantizer, QuantResult, quantize_model
from tacq.quant.recipe import Recipe
from tacq.quant.reference import References
from tacq.quant.rotation import quantize_rotated
from tacq.quant.rounding import RoundingConfig, tune_rounding

# Shares of the progress bar, relative to each other: GPTQ's column loop is the long part;
# a pass after it fits every block once more.
PASS_WEIGHTS = {"quantize": 1.0, "rounding": 0.5, "distill": 0.5}

Step = Callable[[QuantResult | None, Progress], QuantResult]


@dataclass(frozen=True)
class Pass:
    name: str  # a key of PASS_WEIGHTS
    run: Step  # previous result (None for the first), progress -> new result


@dataclass(frozen=True)
class FitBatches:
    """What a fitting pass fits on and checks against (CalibrationSet.fit_and_check)."""

    fit: list[Batch]
    check: list[Batch]


def run_passes(passes: list[Pass], progress: Progress | None = None) -> QuantResult:
    """Each pass on the previous one's result, its progress scaled to its weight."""
    total = sum(PASS_WEIGHTS[p.name] for p in passes)
    done, result = 0.0, None
    for p in passes:
        share = PASS_WEIGHTS[p.name]
        result = p.run(result, scaled(progress, done / total, (done + share) / total))
        done += share
    assert result is not None, "a recipe runs at least its quantizer"
    return result


def recipe_passes(
    model: nn.Module,
    recipe: Recipe,
    batches: list[Batch],
    masks: Mapping[str, Tensor] | None,
    references: References,
    rounding_fit: FitBatches | None = None,
    distill_fit: FitBatches | None = None,
    exec_device: str | None = None,
    group_quantizer: GroupQuantizer | None = None,
) -> list[Pass]:
    """The passes `recipe` names, in the order they run.

    masks: name -> kept weights (None: nothing kept, so the reference quantization, from
    its cache when one exists). rounding_fit / distill_fit: needed when the recipe tunes
    rounding / distils scales.
    """
    cfg, rotation = recipe.gptq_config, recipe.rotation

    def quantize(_: QuantResult | None, progress: Progress) -> QuantResult:
        if rotation is not None:
            return quantize_rotated(
                model, batches, cfg, masks, progress=progress, kind=rotation,
                exec_device=exec_device, grids=references.rotated_grid(cfg, rotation),
            )  # fmt: skip
        if masks is None:
            return references.get(
                cfg.bits, cfg.method, progress, cfg.group_size, cfg.damp, cfg.act_order
            )
        return quantize_model(
            model, batches, cfg, masks, progress=progress, exec_device=exec_device,
            unmasked=references.unmasked_grid(cfg), group_quantizer=group_quantizer,
        )  # fmt: skip

    def rounding(result: QuantResult | None, progress: Progress) -> QuantResult:
        cfg = RoundingConfig(
            recipe.rounding_steps, check=recipe.rounding_check, clip=recipe.rounding_clip
        )
        check = rounding_fit.check if cfg.check else None
        return tune_rounding(model, rounding_fit.fit, result, cfg, progress, check=check)

    def distill(result: QuantResult | None, progress: Progress) -> QuantResult:
        cfg = DistillConfig(recipe.distill_epochs)
        return tune_scales(model, result, distill_fit.fit, cfg, distill_fit.check, progress)

    passes = [Pass("quantize", quantize)]
    if recipe.rounding_steps:
        passes.append(Pass("rounding", rounding))
    if recipe.distill_epochs:
        passes.append(Pass("distill", distill))
    return passes
