"""Why a module's weights were kept: its top kept weights and how it compares to the model.

Plain functions over the same cached statistics the ranking used, so an explanation can
never disagree with the circuit shown.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from tacq.models import MODULE_KINDS, layer_index, module_kind
from tacq.select import Ranking


@dataclass
class ModuleExplanation:
    name: str
    kept: int
    weights: int
    model_share: float  # the ratio p: kept share of the whole model
    top: pd.DataFrame  # the module's highest-scoring kept weights: row, col, W, G, dW, score
    busy_rows: list[tuple[int, int]]  # (output row, kept count), most first
    busy_cols: list[tuple[int, int]]  # (input column, kept count), most first

    @property
    def share(self) -> float:
        return self.kept / self.weights

    def sentence(self) -> str:
        """The explanation in plain words."""
        where = f"layer {layer_index(self.name)} {MODULE_KINDS.get(module_kind(self.name), '')}"
        if self.kept == 0:
            return f"{where} keeps none of its {self.weights:,} weights at this ratio."
        times = self.share / self.model_share if self.model_share else float("nan")
        rows = ", ".join(f"{r} ({n})" for r, n in self.busy_rows[:3])
        cols = ", ".join(f"{c} ({n})" for c, n in self.busy_cols[:3])
        return (
            f"{where} keeps {self.share:.2%} of its weights ({self.kept:,} of "
            f"{self.weights:,}), {times:.1f}x the model average of {self.model_share:.2%}. "
            f"They concentrate in output rows {rows} and input columns {cols}."
        )


def row_col_saliency(scores: Tensor) -> tuple[Tensor, Tensor]:
    """Summed score per output row and per input column of one Linear."""
    return scores.sum(1), scores.sum(0)


def explain_module(
    ranking: Ranking,
    name: str,
    ratio: float,
    scores: Tensor,
    W: Tensor,
    G: Tensor | None,
    dW: Tensor | None,
    top: int = 10,
) -> ModuleExplanation:
    """Kept weights of Linear `name` at `ratio`, the `top` of them with their terms."""
    i = ranking.names.index(name)
    k = ranking.k_at(ratio)
    start = int(ranking.offsets[i])
    mine = ranking.order[:k][ranking.layer_of[:k] == i] - start  # flat, best first
    out_f, in_f = ranking.shapes[i]
    rows, cols = mine // in_f, mine % in_f
    pick = slice(0, top)
    r, c = rows[pick], cols[pick]
    terms = {"G = Σ|g|": G, "dW": dW}  # a metric that never uses a term gets no column
    table = pd.DataFrame(
        {
            "row": r.tolist(),
            "col": c.tolist(),
            "W": W[r, c].float().tolist(),
            **{label: t[r, c].tolist() for label, t in terms.items() if t is not None},
            "score": scores[r, c].tolist(),
        }
    )
    busy = lambda idx, n: [  # noqa: E731
        (int(j), int(cnt))
        for cnt, j in zip(*torch.bincount(idx, minlength=n).sort(descending=True))
        if cnt > 0
    ]
    return ModuleExplanation(
        name, len(mine), out_f * in_f, ratio, table, busy(rows, out_f)[:5], busy(cols, in_f)[:5]
    )
