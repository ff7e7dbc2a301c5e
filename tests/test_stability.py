"""Circuit stability: overlaps equal a naive count over keep masks; chance is k_a k_b / n."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tacq.circuit.select import Selection, layer_jaccard, rank
from tacq.circuit.stability import Circuit, overlap, stability
from tacq.errors import Cancelled, TacqError
from tacq.study.workflow import Study


def _ranking(shapes: dict[str, tuple[int, int]], seed: int):
    g = torch.Generator().manual_seed(seed)
    return rank({n: torch.rand(s, generator=g) for n, s in shapes.items()}, max_ratio=0.2)


SHAPES = {
    "model.layers.0.self_attn.q_proj": (8, 16),
    "model.layers.0.mlp.down_proj": (16, 12),
    "model.layers.1.self_attn.q_proj": (8, 16),
}


def test_overlap_counts_like_the_masks_do():
    a, b = _ranking(SHAPES, 0), _ranking(SHAPES, 1)
    j, chance, layers = overlap(Circuit.of(a, 0.15), Circuit.of(b, 0.15))
    ma, mb = a.masks(0.15), b.masks(0.15)
    inter = sum(int((ma[n] & mb[n]).sum()) for n in SHAPES)
    union = sum(int((ma[n] | mb[n]).sum()) for n in SHAPES)
    assert j == pytest.approx(inter / union)
    naive = layer_jaccard(ma, mb)
    assert layers["jaccard"].tolist() == pytest.approx(naive["jaccard"].tolist())
    e = sum(int(ma[n].sum()) * int(mb[n].sum()) / ma[n].numel() for n in SHAPES)
    ka, kb = sum(int(m.sum()) for m in ma.values()), sum(int(m.sum()) for m in mb.values())
    assert chance == pytest.approx(e / (ka + kb - e))
    same, _, _ = overlap(Circuit.of(a, 0.15), Circuit.of(a, 0.15))
    assert same == 1.0


def test_metrics_matrix_is_the_masks_overlap(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    study.collect()
    sel = Selection("tacq", bits=2, ratio=0.02)
    res = stability(study, sel, "metrics", metrics=("tacq", "msg", "magnitude"))
    m = res.matrix
    assert list(m.index) == ["tacq", "msg", "magnitude"]
    assert (m.values == m.values.T).all() and all(m.loc[x, x] == 1.0 for x in m.index)
    ta = study.ranking(sel).masks(0.02)
    mg = study.ranking(sel.at(metric="magnitude")).masks(0.02)
    inter = sum(int((ta[n] & mg[n]).sum()) for n in ta)
    union = sum(int((ta[n] | mg[n]).sum()) for n in ta)
    assert m.loc["tacq", "magnitude"] == pytest.approx(inter / union)
    pairs = res.pairs()
    assert len(pairs) == 3 and (pairs["x chance"] > 0).all()
    shared = res.shared.set_index("circuit")
    flat = {
        k: {(n, i) for n, msk in v.items() for i in msk.flatten().nonzero().flatten().tolist()}
        for k, v in (("tacq", ta), ("magnitude", mg))
    }
    msg = study.ranking(sel.at(metric="msg")).masks(0.02)
    flat["msg"] = {
        (n, i) for n, msk in msg.items() for i in msk.flatten().nonzero().flatten().tolist()
    }
    every = flat["tacq"] & flat["msg"] & flat["magnitude"]
    only_tacq = flat["tacq"] - flat["msg"] - flat["magnitude"]
    assert shared.loc["tacq", "kept by every circuit"] == len(every)
    assert shared.loc["tacq", "kept by no other"] == len(only_tacq)
    assert shared.loc["msg", "kept"] == len(flat["msg"])
    assert res.summary().startswith("3 scores at 2.00%: mean Jaccard")


def test_halves_are_studied_apart(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    sel = Selection("msg", bits=2, ratio=0.02)
    res = stability(study, sel, "halves")
    labels = list(res.matrix.index)
    assert labels == ["half 1 (4 examples)", "half 2 (4 examples)"]
    # the same circuits by hand: a study on each half
    circuits = []
    for part in (tiny_task.calib[0::2], tiny_task.calib[1::2]):
        s = Study(tiny_lm, replace(tiny_task, calib=part))
        s.collect()
        circuits.append(s.ranking(sel).masks(0.02))
    a, b = circuits
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    union = sum(int((a[n] | b[n]).sum()) for n in a)
    assert res.matrix.iloc[0, 1] == pytest.approx(inter / union)
    assert set(res.layers["pair"]) == {f"{labels[0]} / {labels[1]}"}


def test_tasks_put_the_own_task_first(tiny_lm, tiny_task):
    other = replace(tiny_task, name="other", calib=tuple(reversed(tiny_task.calib)))
    res = stability(Study(tiny_lm, tiny_task), Selection("msg", 2, 0.02), "tasks", tasks=(other,))
    assert list(res.matrix.index) == ["tiny", "other"]
    assert 0 < res.matrix.loc["tiny", "other"] <= 1


def test_refusals_and_cancel(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    sel = Selection("msg", 2, 0.02)
    with pytest.raises(TacqError, match="every seed picks the same ones"):
        stability(study, sel, "seeds")
    with pytest.raises(TacqError, match="ratio above 0"):
        stability(study, sel.at(ratio=0.0), "metrics")
    with pytest.raises(TacqError, match="Compare across one of"):
        stability(study, sel, "layers")

    def stop(frac, label):
        if "half 2" in label:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        stability(study, sel, "halves", progress=stop)
