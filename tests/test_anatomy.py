"""Heads and neurons: the ranking-prefix aggregation equals a naive loop over masks."""

from __future__ import annotations

import pytest
import torch

from tacq.circuit.anatomy import Geometry, aggregate, heads_grid, top_neurons
from tacq.circuit.select import rank
from tacq.errors import TacqError
from tacq.models import quantizable_linears
from tests.tiny import make_tiny_llama, make_tiny_phi3


def _scores(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        n: torch.rand(m.weight.shape, generator=g) for n, m in quantizable_linears(model).items()
    }


def _naive(masks, scores, geo, unit):
    """Slice each unit out of each mask by hand."""
    d, inter = geo.head_dim, geo.intermediate
    out = {}
    for name, m in masks.items():
        layer, kind = int(name.split(".")[2]), name.rsplit(".", 1)[-1][: -len("_proj")]
        s = scores[name] * m
        if unit == "query" and kind in ("q", "o"):
            for h in range(geo.n_heads):
                part = (
                    (m[h * d : (h + 1) * d], s[h * d : (h + 1) * d])
                    if kind == "q"
                    else (m[:, h * d : (h + 1) * d], s[:, h * d : (h + 1) * d])
                )
                k, sc = out.get((layer, h), (0, 0.0))
                out[(layer, h)] = (k + int(part[0].sum()), sc + float(part[1].sum()))
        if unit == "kv" and kind in ("k", "v"):
            for h in range(geo.n_kv_heads):
                k, sc = out.get((layer, h), (0, 0.0))
                rows = slice(h * d, (h + 1) * d)
                out[(layer, h)] = (k + int(m[rows].sum()), sc + float(s[rows].sum()))
        if unit == "neurons" and kind in ("gate", "up", "down"):
            for i in range(inter):
                k, sc = out.get((layer, i), (0, 0.0))
                part = (m[i], s[i]) if kind != "down" else (m[:, i], s[:, i])
                out[(layer, i)] = (k + int(part[0].sum()), sc + float(part[1].sum()))
    return out


@pytest.mark.parametrize("unit", ["query", "kv", "neurons"])
@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_aggregation_equals_slicing_each_unit(unit):
    model = make_tiny_llama()
    geo = Geometry.of(model.config)
    assert (geo.n_heads, geo.n_kv_heads, geo.head_dim, geo.intermediate) == (4, 2, 16, 96)
    scores = _scores(model)
    ranking = rank(scores, 0.05)
    frame = aggregate(ranking, 0.05, geo, unit)
    want = _naive(ranking.masks(0.05), scores, geo, unit)
    label = "neuron" if unit == "neurons" else "head"
    got = {(r.layer, r[label]): (r.kept, r.score) for _, r in frame.iterrows()}
    assert got.keys() == want.keys()
    for key, (k, sc) in want.items():
        assert got[key][0] == k and got[key][1] == pytest.approx(sc, rel=1e-6)
    # every weight of q and o is in exactly one query head
    if unit == "query":
        per_layer = frame.groupby("layer")["weights"].sum()
        assert per_layer.tolist() == [2 * 64 * 64] * 2


def test_fused_phi3_projections_give_the_same_units():
    llama, phi = make_tiny_llama(), make_tiny_phi3()
    scores = _scores(llama)
    fused = {}
    for layer in range(2):
        a, m = f"model.layers.{layer}.self_attn", f"model.layers.{layer}.mlp"
        qkv = [scores[f"{a}.{k}_proj"] for k in "qkv"]
        fused[f"{a}.qkv_proj"] = torch.cat(qkv)
        fused[f"{a}.o_proj"] = scores[f"{a}.o_proj"]
        fused[f"{m}.gate_up_proj"] = torch.cat([scores[f"{m}.gate_proj"], scores[f"{m}.up_proj"]])
        fused[f"{m}.down_proj"] = scores[f"{m}.down_proj"]
    assert set(fused) == set(quantizable_linears(phi))
    for unit in ("query", "kv", "neurons"):
        want = aggregate(rank(scores, 0.05), 0.05, Geometry.of(llama.config), unit)
        got = aggregate(rank(fused, 0.05), 0.05, Geometry.of(phi.config), unit)
        assert got[["layer", "kept", "weights"]].equals(want[["layer", "kept", "weights"]])
        assert got["score"].tolist() == pytest.approx(want["score"].tolist(), rel=1e-6)


def test_units_cover_every_kept_weight_once():
    model = make_tiny_llama()
    ranking = rank(_scores(model), 0.05)
    geo = Geometry.of(model.config)
    kept = sum(aggregate(ranking, 0.05, geo, u)["kept"].sum() for u in ("query", "kv", "neurons"))
    assert kept == ranking.k_at(0.05)


def test_grid_top_and_errors():
    model = make_tiny_llama()
    ranking = rank(_scores(model), 0.05)
    geo = Geometry.of(model.config)
    grid = heads_grid(aggregate(ranking, 0.05, geo, "query"))
    assert grid.shape == (2, 4) and ((grid >= 0) & (grid <= 1)).all().all()
    neurons = aggregate(ranking, 0.05, geo, "neurons")
    top = top_neurons(neurons, 5)
    assert len(top) == 5 and top["kept"].tolist() == sorted(top["kept"], reverse=True)
    assert top["kept"].iloc[0] == neurons["kept"].max()
    with pytest.raises(TacqError, match="Unknown unit"):
        aggregate(ranking, 0.05, geo, "layers")
    wrong = Geometry(8, 2, 16, 96)  # a config that does not match the weights
    with pytest.raises(TacqError, match="unsupported layout"):
        aggregate(ranking, 0.05, wrong, "query")


def test_nothing_kept_gives_zero_rows():
    model = make_tiny_llama()
    frame = aggregate(rank(_scores(model), 0.05), 0.0, Geometry.of(model.config), "kv")
    assert len(frame) == 2 * 2 and frame["kept"].sum() == 0 and frame["score"].sum() == 0
