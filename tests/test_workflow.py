"""A Study on the tiny model: caches hit, the slider is a lookup, variants are named."""

from __future__ import annotations

import pytest
import torch

from tacq.circuit.select import Selection
from tacq.errors import TacqError
from tacq.formats.grid import DEFAULT_DAMP
from tacq.models import quantizable_linears
from tacq.quant.recipe import Recipe
from tacq.study.explain import explain_module
from tacq.study.workflow import Study


def test_collect_twice_is_a_cache_hit(tiny_lm, tiny_task):
    first = Study(tiny_lm, tiny_task).collect()
    again = Study(tiny_lm, tiny_task).collect()
    assert not first.from_cache and again.from_cache
    for n, G in first.abs_grad.items():
        assert torch.equal(G, again.abs_grad[n])


def test_ratio_change_counts_and_bits(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    study.collect()
    sel = Selection("tacq", bits=2)
    r = study.ranking(sel)
    small, big = study.size_at(sel.at(ratio=0.001), r), study.size_at(sel.at(ratio=0.01))
    N = sum(m.weight.numel() for m in quantizable_linears(tiny_lm.model).values())
    assert (small.n_kept, big.n_kept) == (int(0.001 * N), int(0.01 * N))
    assert big.bpw_paper > small.bpw_paper > 2
    assert big.total_bytes > small.total_bytes


def test_variant_keeps_top_scores_and_reference_is_reused(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    study.collect()
    v = study.quantize(Recipe.of(Selection("qal", bits=2, ratio=0.01)))
    assert v.name == "qal-2bit-1.00%"
    masks = study.ranking(Selection("qal", 2)).masks(0.01)
    for name, lq in v.result.layers.items():
        assert torch.equal(lq.keep_mask, masks[name])
    ref = study.quantize(Recipe.of(Selection(bits=2, ratio=0.0)))
    assert ref.name == "gptq-2bit"
    reused = study.references.done[(2, "gptq", None, DEFAULT_DAMP)]
    for name, lq in ref.result.layers.items():
        assert torch.equal(lq.codes, reused.layers[name].codes), name
    assert ref.spec.metric is None and v.spec.metric == "qal"
    with pytest.raises(TacqError, match="between 0 and"):
        Selection(bits=2, ratio=0.7)
    with pytest.raises(TacqError, match="2, 3 or 4"):
        Selection(bits=5, ratio=0.01)
    with pytest.raises(TacqError, match="Unknown metric"):
        Selection("nope")


def test_explain_matches_ranking_and_formula(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    study.collect()
    sel = Selection("tacq", 2, 0.02)
    ranking = study.ranking(sel)
    i = 5
    name = ranking.names[i]
    why = study.explain(sel, name)
    assert why.kept == int(ranking.counts(0.02)[i]) > 0
    assert list(why.top["score"]) == sorted(why.top["score"], reverse=True)
    t = why.top.iloc[0]
    assert t["score"] == pytest.approx(abs(t["G = Σ|g|"] * t["dW"] * t["W"]), rel=1e-5)
    msg_sel = sel.at(metric="msg")
    msg_ranking = study.ranking(msg_sel)
    # the module MSG keeps most of: a near-empty one may keep none, float noise deciding
    most = msg_ranking.names[int(msg_ranking.counts(0.02).argmax())]
    msg_scores, _ = study.module_scores(msg_sel, most)
    W = quantizable_linears(tiny_lm.model)[most].weight.float()
    G = study.collect().abs_grad[most]
    msg = explain_module(msg_ranking, most, 0.02, msg_scores, W, G, None).top
    assert len(msg) > 0 and "dW" not in msg  # a term that was never computed gets no (empty) column
    assert (msg["score"] - (msg["G = Σ|g|"] * msg["W"]).abs()).abs().max() < 1e-6
    assert sum(n for _, n in why.busy_rows) <= why.kept
    assert f"{why.share / 0.02:.1f}x the model average" in why.sentence()
    rows, cols = study.layer_saliency(sel, name)
    scores, _ = study.module_scores(sel, name)
    assert torch.allclose(rows.sum(), cols.sum()) and rows.shape[0] == scores.shape[0]


def test_demo_runs_every_stage_in_order(tiny_lm, tiny_task):
    from tacq.study.demo import GPTQ_BASELINES, demo_recipe, plan_demo, run_demo

    demo = plan_demo(Study(tiny_lm, tiny_task), quick=True, gptq=GPTQ_BASELINES)
    seen = [[s.status for s in d.stages] for d in run_demo(demo)]
    assert seen[0][0] == "running" and all(st == "done" for st in seen[-1])
    assert len(seen) == 2 * len(demo.stages)
    names = [demo_recipe(2).name, "gptq-2bit", "gptq-2bit-g128"]
    assert [v.name for v in demo.variants] == names
    assert [s.name for s in demo.stages[1:4]] == [
        f"quantize {names[0]}",
        "quantize gptq-2bit (per channel)",
        "quantize gptq-2bit-g128",
    ]
    assert [r.name for r in demo.results] == ["original", *names]
    assert demo.variants[2].spec.group_size == 128 and demo.variants[1].spec.group_size is None
    assert demo.results[1].kl_to_fp > 0 and demo.results[0].kl_to_fp in (None, 0.0)


def test_streamed_ranking_equals_ranking_all_scores(tiny_lm, tiny_task, monkeypatch):
    import tacq.circuit.select as sel

    study = Study(tiny_lm, tiny_task)
    study.collect()
    import tacq.study.scoring as scoring

    monkeypatch.setattr(sel, "SAMPLE", 2_000)  # the tiny model's 57k weights > 4 x sample
    monkeypatch.setattr(scoring, "STREAM_SCORES_ABOVE", 0)  # as for a large model
    streamed = study.ranking(sel.Selection("tacq", 2))
    whole = sel.rank(study.scores(sel.Selection("tacq", 2)), streamed.max_ratio)
    assert torch.equal(streamed.order, whole.order)
    assert torch.equal(streamed.scores_sorted, whole.scores_sorted)
