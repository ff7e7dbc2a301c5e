"""A weight-level circuit read as attention heads and MLP neurons.

Why: interpretability users think in heads and neurons, not matrix entries. A query head
h owns rows h*d..(h+1)*d of q_proj and the same columns of o_proj; a key/value head (shared
by several query heads under grouped-query attention) owns those rows of k_proj and
v_proj; MLP neuron i owns row i of gate_proj and up_proj and column i of down_proj. Fused
projections (Phi-3's qkv_proj, gate_up_proj) are cut at the same offsets. Each unit's
kept count and the kept weights' score sum come from the ranking's kept prefix alone:
the whole model takes a fraction of a second once the ranking is cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from tacq.circuit.select import Ranking
from tacq.errors import TacqError
from tacq.models import layer_index, module_kind

HEAD_COLUMNS = ["layer", "head", "kept", "weights", "kept share", "score"]
NEURON_COLUMNS = ["layer", "neuron", "kept", "weights", "kept share", "score"]


@dataclass(frozen=True)
class Geometry:
    """Head and MLP sizes from a transformers config."""

    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int

    @classmethod
    def of(cls, config) -> Geometry:
        n_heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads
        return cls(n_heads, n_kv, head_dim, config.intermediate_size)


# (role, axis) of the parts each module kind holds, in row order.
# axis 0: a unit owns rows of the part; axis 1: it owns columns.
PARTS = {
    "q": [("q", 0)],
    "k": [("k", 0)],
    "v": [("v", 0)],
    "qkv": [("q", 0), ("k", 0), ("v", 0)],
    "o": [("o", 1)],
    "gate": [("gate", 0)],
    "up": [("up", 0)],
    "gate_up": [("gate", 0), ("up", 0)],
    "down": [("down", 1)],
}


def _unit_sizes(geo: Geometry) -> dict[str, tuple[int, int]]:
    """role -> (units, width of one unit along its axis)."""
    return {
        "q": (geo.n_heads, geo.head_dim),
        "o": (geo.n_heads, geo.head_dim),
        "k": (geo.n_kv_heads, geo.head_dim),
        "v": (geo.n_kv_heads, geo.head_dim),
        "gate": (geo.intermediate, 1),
        "up": (geo.intermediate, 1),
        "down": (geo.intermediate, 1),
    }


ROLES = {"query": ("q", "o"), "kv": ("k", "v"), "neurons": ("gate", "up", "down")}


def aggregate(ranking: Ranking, ratio: float, geo: Geometry, unit: str) -> pd.DataFrame:
    """Kept weights, all weights and the kept weights' score sum per unit ('query' heads,
    'kv' heads or 'neurons') per layer, at `ratio` of `ranking`.

    Reads only the ranked prefix (the kept weights' flat indices and scores), so the cost
    grows with the kept count, not with the model.
    """
    if unit not in ROLES:
        raise TacqError(f"Unknown unit {unit!r}; choose from {', '.join(ROLES)}.")
    k = ranking.k_at(ratio)
    which = ranking.layer_of[:k]
    by_linear = torch.argsort(which, stable=True)  # each Linear's kept weights contiguous
    flat, score = ranking.order[:k][by_linear], ranking.scores_sorted[:k][by_linear]
    ends = torch.cumsum(torch.bincount(which, minlength=len(ranking.names)), 0).tolist()
    sizes = _unit_sizes(geo)
    kept: dict[int, Tensor] = {}
    total: dict[int, Tensor] = {}
    mass: dict[int, Tensor] = {}
    for i, (name, (out_f, in_f)) in enumerate(zip(ranking.names, ranking.shapes)):
        kind, layer = module_kind(name), layer_index(name)
        if kind not in PARTS:
            continue
        begin = ends[i - 1] if i else 0
        local = flat[begin : ends[i]] - ranking.offsets[i]
        row, col, sc = local // in_f, local % in_f, score[begin : ends[i]].double()
        start = 0
        for role, axis in PARTS[kind]:
            n, width = sizes[role]
            span = n * width
            if (out_f if axis == 0 else in_f) < start + span:
                raise TacqError(
                    f"{name} is {out_f}x{in_f}; the config's heads and sizes need "
                    f"{start + span} {'rows' if axis == 0 else 'columns'}: unsupported layout."
                )
            if role not in ROLES[unit]:
                start += span if axis == 0 else 0
                continue
            pos = row - start if axis == 0 else col
            inside = (pos >= 0) & (pos < span)
            u = pos[inside] // width
            kept[layer] = kept.get(layer, 0) + torch.bincount(u, minlength=n)
            mass[layer] = mass.get(layer, 0) + torch.bincount(u, sc[inside], minlength=n)
            per = width * (in_f if axis == 0 else out_f)
            total[layer] = total.get(layer, 0) + torch.full((n,), per, dtype=torch.int64)
            start += span if axis == 0 else 0
    label = "neuron" if unit == "neurons" else "head"
    columns = NEURON_COLUMNS if unit == "neurons" else HEAD_COLUMNS
    if not kept:
        return pd.DataFrame(columns=columns)
    layers = sorted(kept)
    k_all = torch.cat([kept[x] for x in layers])
    w_all = torch.cat([total[x] for x in layers])
    frame = pd.DataFrame(
        {
            "layer": torch.cat([torch.full_like(kept[x], x) for x in layers]).numpy(),
            label: torch.cat([torch.arange(len(kept[x])) for x in layers]).numpy(),
            "kept": k_all.numpy(),
            "weights": w_all.numpy(),
            "kept share": (k_all.double() / w_all.double()).numpy(),
            "score": torch.cat([mass[x] for x in layers]).numpy(),
        }
    )
    return frame[columns]


def heads_grid(frame: pd.DataFrame) -> pd.DataFrame:
    """layers x heads of the kept share (the heatmap's grid)."""
    return frame.pivot(index="layer", columns="head", values="kept share")


def top_neurons(frame: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The n neurons holding most kept weights (ties: higher score, then lower layer)."""
    order = frame.sort_values(
        ["kept", "score", "layer", "neuron"], ascending=[False, False, True, True]
    )
    return order.head(n).reset_index(drop=True)
