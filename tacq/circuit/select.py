"""Global top-k selection over all quantizable weights (honest sizes: tacq.formats.sizes).

Scores are sorted once (up to a maximum ratio); any new outlier ratio p is then a prefix of
that order: k = int(p * N), per-layer counts are a bincount of the prefix. No per-layer
quota: where the circuit lives is the finding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import Tensor

from tacq.circuit.saliency import METRICS, get_metric
from tacq.errors import TacqError
from tacq.formats.grid import check_group_size
from tacq.models import layer_index, module_kind

MAX_RATIO = 0.5
DEFAULT_RATIO = 0.0035  # the paper's outlier ratio
SLIDER_MAX_RATIO = 0.02  # rankings cover at least this much (the app's slider range)
BIT_WIDTHS = (2, 3, 4)


def check_ratio(p: float) -> float:
    if not (0.0 <= p <= MAX_RATIO) or math.isnan(p):
        raise TacqError(f"Outlier ratio must be between 0 and {MAX_RATIO} (got {p}).")
    return float(p)


@dataclass(frozen=True)
class Selection:
    """Which weights a circuit keeps and the number format of the rest.

    The one argument order of every step that scores, ranks, sizes or quantizes. ratio 0
    keeps nothing: plain GPTQ (or RTN), whatever the metric.
    """

    metric: str = "tacq"  # a name in tacq.circuit.saliency.METRICS
    bits: int = 2  # bit width of the quantized weights
    ratio: float = DEFAULT_RATIO  # share of all quantizable weights kept in 16 bits
    group_size: int | None = None  # None: one scale and zero per output row (the paper)

    def __post_init__(self) -> None:
        get_metric(self.metric)
        if self.bits not in BIT_WIDTHS:
            raise TacqError(f"Bit width must be 2, 3 or 4 (got {self.bits}).")
        object.__setattr__(self, "ratio", check_ratio(self.ratio))
        check_group_size(self.group_size)

    @property
    def ranking_key(self) -> tuple:
        """Rankings depend on the number format only through dW = W - Q(W)."""
        if METRICS[self.metric].needs_quant:
            return self.metric, self.bits, self.group_size
        return self.metric, None, None

    def at(self, **changes) -> Selection:
        """The same selection with some fields changed (e.g. another ratio or bit width)."""
        return replace(self, **changes)


@dataclass
class Ranking:
    """All weights of the model in one global order, best first (for the top max_ratio)."""

    names: list[str]  # Linear names in model order
    shapes: list[tuple[int, int]]  # (out, in) of each
    offsets: Tensor  # (L + 1,) int64 start of each Linear in the flat order
    order: Tensor  # (k_max,) int64 flat indices sorted by score desc, ties by index asc
    layer_of: Tensor  # (k_max,) int64 which Linear each ranked weight belongs to
    scores_sorted: Tensor  # (k_max,) fp32 the scores in that order
    max_ratio: float

    @property
    def n_total(self) -> int:
        return int(self.offsets[-1])

    def k_at(self, p: float) -> int:
        """k = int(p * N) (the paper's rounding)."""
        p = check_ratio(p)
        if p > self.max_ratio + 1e-12:
            raise TacqError(
                f"This ranking covers ratios up to {self.max_ratio}; rank again "
                f"with max_ratio >= {p}."
            )
        return min(int(p * self.n_total), len(self.order))

    def counts(self, p: float) -> Tensor:
        """Kept weights per Linear at ratio p. -> (L,) int64. A threshold lookup, no sort."""
        k = self.k_at(p)
        return torch.bincount(self.layer_of[:k], minlength=len(self.names))

    def masks(self, p: float) -> LayerMasks:
        """Keep masks (out, in) bool per Linear at ratio p, each built when read."""
        return LayerMasks(self, self.k_at(p))

    def threshold(self, p: float) -> float:
        """Score of the last kept weight at ratio p (inf when nothing is kept)."""
        k = self.k_at(p)
        return float(self.scores_sorted[k - 1]) if k else float("inf")


class LayerMasks(Mapping[str, Tensor]):
    """Linear name -> (out, in) bool keep mask of a ranking's top k, built when read.

    Why: all masks at once are a bool per weight of the whole model (1.1 GB for a 1.1B
    model) held through minutes of GPTQ, which reads one group's masks at a time.
    """

    def __init__(self, ranking: Ranking, k: int) -> None:
        self.ranking = ranking
        by_layer = torch.argsort(ranking.layer_of[:k], stable=True)  # score order kept
        self.top = ranking.order[:k][by_layer]
        counts = torch.bincount(ranking.layer_of[:k], minlength=len(ranking.names))
        self.starts = [0, *torch.cumsum(counts, 0).tolist()]
        self.index = {n: i for i, n in enumerate(ranking.names)}

    def __getitem__(self, name: str) -> Tensor:
        i = self.index[name]
        out_f, in_f = self.ranking.shapes[i]
        flat = torch.zeros(out_f * in_f, dtype=torch.bool)
        flat[self.top[self.starts[i] : self.starts[i + 1]] - self.ranking.offsets[i]] = True
        return flat.view(out_f, in_f)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ranking.names)

    def __len__(self) -> int:
        return len(self.ranking.names)


SAMPLE = 1_000_000  # scores sampled to estimate the cut on large models


def rank(scores: dict[str, Tensor], max_ratio: float = 0.02) -> Ranking:
    """Sort the top `max_ratio` of all scores globally, deterministically."""
    names = list(scores)
    return rank_layers(
        names, [tuple(scores[n].shape) for n in names], lambda i: scores[names[i]], max_ratio
    )


def rank_layers(
    names: list[str],
    shapes: list[tuple[int, int]],
    score_of: Callable[[int], Tensor],
    max_ratio: float = 0.02,
) -> Ranking:
    """Global top `max_ratio` over Linears whose scores are computed one at a time.

    Only one Linear's scores and the candidates are in memory at once (a 7B model's full
    score vector alone is 28 GB). Large models: pass 1 samples the scores to place a cut at
    or below the k-th largest (a quantile lowered by five standard errors), pass 2 keeps
    the scores above it; the candidates are then sorted stably, so ties keep index order
    and the result equals a full sort. Small models (and a cut that turns out too high)
    take the exact path: all scores at once and kthvalue.
    """
    max_ratio = check_ratio(max_ratio)
    sizes = torch.tensor([o * i for o, i in shapes], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])
    N = int(offsets[-1])
    k_max = min(N, int(max_ratio * N) + 1)
    if k_max == 0 or N == 0:
        raise TacqError("No weights to rank.")
    flat_of = lambda i: score_of(i).reshape(-1).float().nan_to_num(0.0)  # noqa: E731
    picked = None
    if N > 4 * SAMPLE:
        cut = _sampled_cut(flat_of, offsets, k_max)
        cands, vals = [], []
        for i in range(len(names)):  # one Linear's scores at a time
            f = flat_of(i)
            c = torch.nonzero(f >= cut).squeeze(1)
            cands.append(c + offsets[i])
            vals.append(f[c])
        if sum(len(c) for c in cands) >= k_max:
            picked = (torch.cat(cands), torch.cat(vals))
    if picked is None:
        flat = torch.cat([flat_of(i) for i in range(len(names))])
        cand = torch.nonzero(flat >= flat.kthvalue(N - k_max + 1).values).squeeze(1)
        picked = (cand, flat[cand])
    cand, vals = picked  # cand ascending in flat index
    sort = torch.argsort(vals, descending=True, stable=True)  # ties keep index order
    order = cand[sort][:k_max]
    layer_of = torch.searchsorted(offsets, order, right=True) - 1
    return Ranking(
        list(names), list(shapes), offsets, order, layer_of, vals[sort][:k_max], max_ratio
    )


def _sampled_cut(flat_of: Callable[[int], Tensor], offsets: Tensor, k_max: int) -> Tensor:
    """A quantile of SAMPLE scores drawn uniformly over all weights, lowered by 5 s.e."""
    N = int(offsets[-1])
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(N, (SAMPLE,), generator=g).sort().values
    layer = torch.searchsorted(offsets, idx, right=True) - 1
    sample = torch.cat([flat_of(i)[idx[layer == i] - offsets[i]] for i in range(len(offsets) - 1)])
    q = 1 - k_max / N
    margin = 5 * math.sqrt(q * (1 - q) / SAMPLE)
    return torch.quantile(sample, max(0.0, q - margin))


def layer_table(ranking: Ranking, p: float) -> pd.DataFrame:
    """Per-Linear kept counts at ratio p: name, layer, module, weights, kept, share."""
    counts = ranking.counts(p).tolist()
    rows = []
    for name, shape, k in zip(ranking.names, ranking.shapes, counts):
        n = shape[0] * shape[1]
        rows.append(
            {
                "name": name,
                "layer": layer_index(name),
                "module": module_kind(name),
                "weights": n,
                "kept": k,
                "share": k / n,
            }
        )
    return pd.DataFrame(rows)


def jaccard(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, float]:
    """Per-Linear Jaccard overlap |A∩B| / |A∪B| of two keep-mask sets (nan when both empty)."""
    out = {}
    for name in a:
        inter = int((a[name] & b[name]).sum())
        union = int((a[name] | b[name]).sum())
        out[name] = inter / union if union else float("nan")
    return out


def layer_jaccard(a: dict[str, Tensor], b: dict[str, Tensor]) -> pd.DataFrame:
    """Per-layer Jaccard overlap of two keep-mask sets (all modules of a layer pooled)."""
    inter: dict[int, int] = {}
    union: dict[int, int] = {}
    for name in a:
        i = layer_index(name)
        inter[i] = inter.get(i, 0) + int((a[name] & b[name]).sum())
        union[i] = union.get(i, 0) + int((a[name] | b[name]).sum())
    return pd.DataFrame(
        [
            {
                "layer": i,
                "kept in both": inter[i],
                "kept in either": union[i],
                "jaccard": inter[i] / union[i] if union[i] else float("nan"),
            }
            for i in sorted(inter)
        ]
    )
