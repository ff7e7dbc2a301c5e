"""One study of a model on a task: the steps the CLI and the app both run, with caches.

gradients (cached on disk) -> unmasked reference quantization per bit width (cached on
disk; gives dW and the GPTQ baseline) -> scores + global ranking per metric (in memory) ->
masked GPTQ variants at any ratio. Every heavy result is computed once and reused. Study
is a facade: each step lives in the module that owns its data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from torch import Tensor

from tacq.circuit.anatomy import Geometry, aggregate
from tacq.circuit.distributed import collect_cached_distributed, in_process_group
from tacq.circuit.gradients import (
    EXTRA_PREFIXES,
    GradientConfig,
    GradStats,
    collect_cached,
    grads_key,
)
from tacq.circuit.select import DEFAULT_RATIO, SLIDER_MAX_RATIO, Ranking, Selection
from tacq.data.batches import Batch
from tacq.data.calibration import CalibrationSet
from tacq.data.tasks import DataConfig, TaskSet
from tacq.errors import TacqError
from tacq.formats.sizes import SizeReport, size_report
from tacq.memory import check_room, dense_linear_bytes, packed_estimate, rotation_bytes
from tacq.models import LoadedModel, quantizable_linears, unquantized_params
from tacq.progress import Progress, scaled
from tacq.quant.distill import distill_bytes
from tacq.quant.pipeline import FitBatches, recipe_passes, run_passes
from tacq.quant.quantize import GroupQuantizer
from tacq.quant.recipe import Recipe
from tacq.quant.reference import References
from tacq.quant.variant import Variant, VariantSpec, build_variant, load_variant
from tacq.study.explain import ModuleExplanation, explain_module, row_col_saliency
from tacq.study.scoring import Scorer

RANKING_SHARE = 0.3  # of a variant's progress bar, when its masks need the ranking first

__all__ = [
    "DEFAULT_RATIO", "SLIDER_MAX_RATIO", "Recipe", "Selection", "Study", "Variant", "load_variant",
]  # fmt: skip


@dataclass
class Study:
    lm: LoadedModel
    task: TaskSet
    data_cfg: DataConfig = field(default_factory=DataConfig)
    grad_cfg: GradientConfig = field(default_factory=GradientConfig)
    exec_device: str | None = None  # stream GPTQ blocks through this device (large models)
    # what quantizes one group of Linears; None: tacq.quant.quantize.quantize_group (the
    # benches time a yardstick against it)
    group_quantizer: GroupQuantizer | None = None

    def __post_init__(self) -> None:
        bs = self.grad_cfg.batch_size
        self.calib = CalibrationSet(self.task, self.lm.tokenizer, self.data_cfg, bs)
        self.references = References(self.lm, self.calib, self.exec_device, self.group_quantizer)
        self.scorer = Scorer(self.lm, self.references, more_stats=self.collect_extra)

    def for_task(self, task: TaskSet) -> Study:
        """A study of another task with the same model and settings (circuit overlap)."""
        return self.with_data(task, self.data_cfg)

    def with_data(self, task: TaskSet, data_cfg: DataConfig) -> Study:
        """A study of other examples (another task, sample or half) with the same model,
        gradient and GPTQ settings (circuit stability)."""
        return Study(self.lm, task, data_cfg, self.grad_cfg, self.exec_device, self.group_quantizer)

    # ------------------------------------------------------------ data and gradients
    @property
    def calib_examples(self) -> list:
        return self.calib.examples

    def digest(self) -> str:
        return self.calib.digest

    def batches(self, answer_only: bool | None = None) -> list[Batch]:
        """Calibration batches: the same examples feed the gradients and the Hessians."""
        return self.calib.batches(self.grad_cfg.answer_only if answer_only is None else answer_only)

    def token_count(self) -> int:
        return sum(b.n_tokens for b in self.batches())

    @property
    def stats(self) -> GradStats | None:
        return self.scorer.stats

    @stats.setter
    def stats(self, stats: GradStats | None) -> None:
        self.scorer.stats = stats
        self.scorer.rankings.clear()

    def grads_key(self) -> str:
        """The gradient cache's key for this model, these examples and settings."""
        return grads_key(self.lm.fingerprint, self.digest(), self.data_cfg, self.grad_cfg)

    def collect(self, progress: Progress | None = None) -> GradStats:
        """Per-sample |grad| sums (and Σg², Σg with grad_cfg.extra_stats), from the disk
        cache when the same run was done before."""
        stats = self._collect(progress)
        self.stats = stats
        return stats

    def _collect(
        self, progress: Progress | None, kinds: tuple[str, ...] | None = None
    ) -> GradStats:
        """The cached collection, or each rank's share of it under torchrun."""
        collect = collect_cached_distributed if in_process_group() else collect_cached
        return collect(
            self.lm.model, self.batches(), self.grad_cfg, self.grads_key(), progress, kinds
        )

    def collect_extra(self, progress: Progress | None = None) -> GradStats:
        """Σg² and Σg beside the collected |g| (Fisher, signed gradient, SqueezeLLM-like): a
        second pass with its own cache, which does not sum |g| again."""
        stats = self.stats
        if stats is None:
            raise TacqError("Collect gradients first.")
        if not stats.sq_grad:
            extra = self._collect(progress, EXTRA_PREFIXES)
            stats.sq_grad, stats.sum_grad = extra.sq_grad, extra.sum_grad
        return stats

    # ------------------------------------------------------------ circuit
    def scores(self, sel: Selection, progress: Progress | None = None) -> dict[str, Tensor]:
        return self.scorer.scores(sel, progress)

    def ranking(self, sel: Selection, progress: Progress | None = None) -> Ranking:
        """Global order under sel's metric, covering at least sel.ratio (and the slider's)."""
        return self.scorer.ranking(sel, progress)

    def cached_ranking(self, sel: Selection) -> Ranking | None:
        return self.scorer.cached_ranking(sel)

    def module_scores(self, sel: Selection, name: str) -> tuple[Tensor, Tensor | None]:
        return self.scorer.module_scores(sel, name)

    def layer_saliency(self, sel: Selection, name: str) -> tuple[Tensor, Tensor]:
        """Summed score per output row and input column of one Linear (the zoom view)."""
        return row_col_saliency(self.module_scores(sel, name)[0])

    def explain(self, sel: Selection, name: str) -> ModuleExplanation:
        """Top kept weights of one Linear with their W, G, dW and score, in plain words."""
        scores, dW = self.module_scores(sel, name)
        W = quantizable_linears(self.lm.model)[name].weight.detach()
        G = self.stats.abs_grad.get(name) if self.stats else None
        return explain_module(self.ranking(sel), name, sel.ratio, scores, W, G, dW)

    def anatomy(self, sel: Selection, unit: str = "query") -> pd.DataFrame:
        """Kept weights and their score per attention head ('query' or 'kv') or MLP neuron
        ('neurons') per layer at sel: the circuit in the units interpretability uses."""
        return aggregate(self.ranking(sel), sel.ratio, Geometry.of(self.lm.model.config), unit)

    def size_at(self, sel: Selection, ranking: Ranking | None = None) -> SizeReport:
        """Honest size at sel (a threshold lookup in the ranking, no recomputation)."""
        ranking = ranking or self.ranking(sel)
        kept = ranking.counts(sel.ratio).tolist()
        other = unquantized_params(self.lm.model)
        return size_report(ranking.shapes, kept, sel.bits, other, sel.group_size)

    # ------------------------------------------------------------ variants
    def quantize(
        self,
        recipe: Recipe,
        progress: Progress | None = None,
        fit: tuple[list[Batch], list[Batch]] | None = None,
    ) -> Variant:
        """A packed variant made by `recipe` (tacq.quant.recipe): masked GPTQ (or RTN) keeping the
        top recipe.ratio weights under recipe.metric, then the passes the recipe names.

        ratio 0 gives plain GPTQ (or RTN) and reuses the cached reference quantization.
        A rotated basis: GPTQ quantizes the unkept weights in a randomly rotated input
        basis, the kept ones stay exact (tacq.quant.rotation). Tuned rounding tunes the unkept
        weights' rounding block by block (tacq.quant.rounding); distillation tunes every scale at
        once against the fp model's distributions (tacq.quant.distill), the epoch kept by the
        held-aside check. Both fit on the batches of the recipe's fit-text policy
        (CalibrationSet.fit_and_check); `fit` = (fit, check) batches replaces them.
        """
        sel, rotation = recipe.selection, recipe.rotation
        estimate = packed_estimate(self.lm.model, sel.bits, sel.ratio, sel.group_size, rotation)
        if rotation is not None:  # the rotated residuals and their R sit beside it while it runs
            estimate += dense_linear_bytes(self.lm.model) + rotation_bytes(self.lm.model, rotation)
        distill_fit = rounding_fit = None
        if recipe.distill_epochs:  # refused before minutes of GPTQ, not after
            distill_fit = FitBatches(
                *(fit or self.fit_batches(recipe, checked=True, who="Distilled scales hold"))
            )
            estimate += distill_bytes(self.lm.model, distill_fit.fit)
        check_room(estimate, "a packed quantized variant")
        if recipe.rounding_steps:
            rounding_fit = FitBatches(
                *(fit or self.fit_batches(
                    recipe, recipe.rounding_check, "Checked rounding holds",
                    ", or tuned rounding without the check",
                ))
            )  # fmt: skip
            if recipe.rounding_check and not rounding_fit.check:
                raise TacqError("Checked rounding needs check batches beside the batches it fits.")
        ranking = self.ranking(sel, scaled(progress, 0.0, RANKING_SHARE)) if sel.ratio else None
        passes = recipe_passes(
            self.lm.model,
            recipe,
            self.batches(answer_only=False),
            ranking.masks(sel.ratio) if ranking else None,
            self.references,
            rounding_fit,
            distill_fit,
            self.exec_device,
            self.group_quantizer,
        )
        result = run_passes(passes, scaled(progress, RANKING_SHARE if ranking else 0.0, 1.0))
        kept = ranking.counts(sel.ratio).tolist() if ranking else [0] * len(result.layers)
        spec = VariantSpec.of(
            recipe, task=self.task.name, examples=self.digest(), base_model=self.lm.fingerprint
        )
        return build_variant(self.lm.model, result, spec, kept)

    def fit_batches(
        self, recipe: Recipe, checked: bool, who: str = "A checked pass holds", otherwise: str = ""
    ) -> tuple[list[Batch], list[Batch]]:
        """(fit, check) batches of a pass that fits weights, by the recipe's fit-text policy
        (CalibrationSet.fit_and_check); refused when no batch is left to check on."""
        fit, check = self.calib.fit_and_check(recipe.fit_text, checked)
        if checked and not check:
            size = self.grad_cfg.batch_size
            raise TacqError(
                f"{who} a batch of {size} calibration examples aside to check the result: "
                f"use more than {size} examples{otherwise}."
            )
        return fit, check
