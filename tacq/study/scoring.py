"""Scores and global rankings of a model's weights under any metric, memoised.

Reads the gradient sums and, for metrics that use dW, the reference quantization at the
selection's bit width; a ranking is computed once per (metric, bits that matter) and any
ratio below its cover is then a prefix lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from tacq.circuit.gradients import GradStats
from tacq.circuit.saliency import METRICS, layer_inputs, layer_scores, model_scores
from tacq.circuit.select import SLIDER_MAX_RATIO, Ranking, Selection, rank, rank_layers
from tacq.errors import TacqError
from tacq.formats.grid import DEFAULT_DAMP
from tacq.models import LoadedModel, quantizable_linears
from tacq.progress import Progress
from tacq.quant.reference import References

STREAM_SCORES_ABOVE = 500_000_000  # weights; above, scores are ranked one Linear at a time


@dataclass
class Scorer:
    lm: LoadedModel
    references: References
    stats: GradStats | None = None
    rankings: dict[tuple, Ranking] = field(default_factory=dict)  # Selection.ranking_key ->
    # Collects Σg² and Σg beside |g| (Study.collect_extra) for the metrics that read them
    more_stats: Callable[[Progress | None], GradStats] | None = None

    def check(self, sel: Selection, progress: Progress | None = None) -> None:
        """Refuse missing gradients; run the second gradient pass or compute dW first
        when the metric needs them."""
        metric = METRICS[sel.metric]
        if metric.needs_grads and self.stats is None:
            raise TacqError("Collect gradients first.")
        if metric.needs_extra and not self.stats.sq_grad:
            if self.more_stats is None:
                raise TacqError(f"{metric.label} needs Σg² and Σg: collect them first.")
            self.more_stats(progress)
        if metric.needs_quant:
            self.references.get(sel.bits, progress=progress, group_size=sel.group_size)

    def _ref(self, sel: Selection):
        if not METRICS[sel.metric].needs_quant:
            return None
        return self.references.get(sel.bits, group_size=sel.group_size)

    def scores(self, sel: Selection, progress: Progress | None = None) -> dict[str, Tensor]:
        """Every Linear's scores (all in memory: for small models and tests)."""
        self.check(sel, progress)
        weights = {n: m.weight for n, m in quantizable_linears(self.lm.model).items()}
        return model_scores(sel.metric, weights, self.stats, self._ref(sel))

    def module_scores(self, sel: Selection, name: str) -> tuple[Tensor, Tensor | None]:
        """One Linear's scores and its dW (None when no reference exists at these bits)."""
        self.check(sel)
        ref = self._ref(sel) or self.references.done.get(
            (sel.bits, "gptq", sel.group_size, DEFAULT_DAMP)
        )
        x = layer_inputs(name, quantizable_linears(self.lm.model)[name].weight, self.stats, ref)
        dW = x.W - x.W_q if x.W_q is not None else None
        return layer_scores(sel.metric, x), dW

    def ranking(self, sel: Selection, progress: Progress | None = None) -> Ranking:
        """The global order under sel's metric, covering at least sel.ratio."""
        have = self.rankings.get(sel.ranking_key)
        if have is not None and have.max_ratio >= sel.ratio:
            return have
        self.check(sel, progress)
        linears = quantizable_linears(self.lm.model)
        names = list(linears)
        shapes = [tuple(m.weight.shape) for m in linears.values()]
        top = max(sel.ratio, SLIDER_MAX_RATIO)
        if sum(o * i for o, i in shapes) <= STREAM_SCORES_ABOVE:
            ranking = rank(self.scores(sel), top)  # faster when it fits
        else:  # one Linear's scores at a time: the score vector never exists whole
            ranking = rank_layers(
                names, shapes, lambda i: self.module_scores(sel, names[i])[0], top
            )
        self.rankings[sel.ranking_key] = ranking
        return ranking

    def cached_ranking(self, sel: Selection) -> Ranking | None:
        """The ranking if already computed (slider moves must never start heavy work)."""
        return self.rankings.get(sel.ranking_key)
