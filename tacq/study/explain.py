"""Why a module's weights were kept: its top kept weights and how it compares to the model.

Plain functions over the same cached statistics the ranking used, so an explanation can
never disagree with the circuit shown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import Tensor

from tacq.circuit.select import Ranking, Selection
from tacq.formats.packed import packed_modules
from tacq.models import MODULE_KINDS, layer_index, module_kind
from tacq.quant.variant import Variant


@dataclass
class ModuleExplanation:
    name: str
    kept: int
    weights: int
    model_share: float  # the ratio p: kept share of the whole model
    top: pd.DataFrame  # the module's highest-scoring kept weights: row, col, W, G, dW, score
    busy_rows: list[tuple[int, int]]  # (output row, kept count), most first
    busy_cols: list[tuple[int, int]]  # (input column, kept count), most first
    stored_in: str | None = None  # the variant whose stored values `top` shows (with_stored)
    stored_by: str = "gptq"  # how it quantized the rest: "gptq", "rotated" or "rtn"

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

    def stored_sentence(self) -> str:
        """What the table's W and stored columns are, or that no variant holds this circuit."""
        if self.stored_in is None:
            return (
                "No quantized variant of this circuit yet (same metric, bits, ratio and "
                "examples): quantize one to see each kept weight's stored value."
            )
        how = {
            "rotated": "its rest was quantized by GPTQ in a rotated basis apart from the kept "
            "weights, so they are stored exactly (in fp16)",
            "rtn": "round-to-nearest moves no weight onto another, so kept weights are stored "
            "exactly (in fp16)",
        }.get(
            self.stored_by,
            "plain masked GPTQ keeps them in 16 bits but first adds the compensation updates "
            "of the columns quantized before them, so the stored value can differ",
        )
        return (
            f"W is the original weight; stored is its 16-bit value in **{self.stored_in}**: {how}."
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


def circuit_variant(
    variants: Iterable[Variant], sel: Selection, examples: str, base_model: str
) -> Variant | None:
    """The latest variant that keeps exactly the circuit `sel` shows: same metric, bits,
    ratio and group size, made from the same examples on the same model (None if none)."""
    found = None
    for v in variants:
        s = v.spec
        same = (s.metric, s.bits, s.group_size) == (sel.metric, sel.bits, sel.group_size)
        if (
            v.peer is None
            and sel.ratio > 0
            and same
            and math.isclose(s.ratio, sel.ratio, rel_tol=1e-9)
            and (s.examples, s.base_model) == (examples, base_model)
        ):
            found = v
    return found


def with_stored(why: ModuleExplanation, variant: Variant) -> ModuleExplanation:
    """`why` with a `stored` column after W: each listed weight's 16-bit value as `variant`
    stores it (NaN where the variant does not keep that weight)."""
    mod = packed_modules(variant.model)[why.name]
    index, values = mod.kept_index.long().cpu(), mod.kept_values.float().cpu()
    flat = torch.tensor(why.top["row"].tolist(), dtype=torch.long) * mod.in_features
    flat += torch.tensor(why.top["col"].tolist(), dtype=torch.long)
    stored = torch.full(flat.shape, float("nan"))
    if len(index):
        pos = torch.searchsorted(index, flat).clamp(max=len(index) - 1)
        stored = torch.where(index[pos] == flat, values[pos], stored)
    top = why.top.copy()
    top.insert(list(top.columns).index("W") + 1, "stored", stored.tolist())
    spec = variant.spec
    by = "rotated" if spec.rotation else "rtn" if spec.method == "rtn" else "gptq"
    return replace(why, top=top, stored_in=variant.name, stored_by=by)
