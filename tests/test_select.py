"""Global selection, bits accounting and saliency formulas on hand-worked cases."""

from __future__ import annotations

import pytest
import torch

from tacq.circuit.saliency import LayerInputs, layer_scores, msg_scores, qal_scores, tacq_scores
from tacq.circuit.select import jaccard, rank
from tacq.errors import TacqError
from tacq.formats.sizes import paper_bpw, size_report


def test_paper_bpw_values():
    assert paper_bpw(2, 0.0035) == pytest.approx(2.105)
    assert paper_bpw(3, 0.0035) == pytest.approx(3.1015)
    assert paper_bpw(4, 0.0) == 4


def test_scores_hand_worked_2x2():
    G = torch.tensor([[1.0, 2.0], [0.5, 4.0]])
    W = torch.tensor([[2.0, -1.0], [3.0, 0.5]])
    W_q = torch.tensor([[1.5, -1.0], [2.0, 1.0]])  # dW = [[.5, 0], [1, -.5]]
    assert torch.equal(qal_scores(G, W, W_q), torch.tensor([[0.5, 0.0], [0.5, 2.0]]))
    assert torch.equal(msg_scores(G, W), torch.tensor([[2.0, 2.0], [1.5, 2.0]]))
    assert torch.equal(tacq_scores(G, W, W_q), torch.tensor([[1.0, 0.0], [1.5, 1.0]]))
    x = LayerInputs(W=W, G=G, fisher=G**2, signed=-G, W_q=W_q, hinv_diag=torch.tensor([0.5, 2.0]))
    assert torch.equal(layer_scores("spqr", x), torch.tensor([[1.0, 0.0], [4.0, 0.0625]]))
    assert torch.equal(layer_scores("squeezellm", x), torch.tensor([[0.25, 0.0], [0.25, 4.0]]))
    assert torch.equal(layer_scores("signed_grad", x), G)
    with pytest.raises(TacqError, match="needs"):
        layer_scores("tacq", LayerInputs(W=W, G=G))


def test_global_topk_known_scores_and_ties():
    scores = {
        "model.layers.0.self_attn.q_proj": torch.tensor([[5.0, 1.0], [3.0, 3.0]]),
        "model.layers.1.mlp.up_proj": torch.tensor([[3.0, 9.0, 0.0]]),
    }
    r = rank(scores, max_ratio=0.5)
    assert r.n_total == 7
    # order: 9 (L1 idx1 -> flat 5), 5 (flat 0), then the 3.0s by flat index: 2, 3 (not 4)
    assert r.order.tolist() == [5, 0, 2, 3]  # k_max = int(0.5 * 7) + 1
    assert r.k_at(3 / 7 + 1e-9) == 3
    m = r.masks(3 / 7 + 1e-9)
    assert m["model.layers.0.self_attn.q_proj"].tolist() == [[True, False], [True, False]]
    assert m["model.layers.1.mlp.up_proj"].tolist() == [[False, True, False]]
    assert r.counts(3 / 7 + 1e-9).tolist() == [2, 1]
    assert r.counts(0.0).tolist() == [0, 0]
    with pytest.raises(TacqError):
        r.k_at(0.9)
    with pytest.raises(TacqError):
        rank(scores, max_ratio=-0.1)


def test_prefix_is_threshold_lookup_on_random_scores():
    g = torch.Generator().manual_seed(0)
    scores = {f"model.layers.{i}.mlp.down_proj": torch.rand(30, 20, generator=g) for i in range(3)}
    r = rank(scores, max_ratio=0.1)
    flat = torch.cat([s.flatten() for s in scores.values()])
    for p in (0.0035, 0.02, 0.1):
        k = int(p * flat.numel())
        expect = torch.topk(flat, k).indices.sort().values
        got = torch.cat([m.flatten() for m in r.masks(p).values()]).nonzero().squeeze(1)
        assert torch.equal(got, expect)


def test_size_report_counts_everything():
    rep = size_report([(8, 16), (4, 16)], kept=[3, 0], bits=2, other_params=100)
    assert rep.code_bytes == 32 + 16
    assert rep.qparam_bytes == 12 * 2 + 12 * 2 // 8  # fp16 scale + 2-bit zero per row
    assert rep.kept_bytes == 3 * 4 + 8 * 2  # value + column each, a uint16 count per row
    assert rep.other_bytes == 200
    assert rep.total_bytes == 48 + 27 + 28 + 200
    assert rep.bpw_paper == pytest.approx(paper_bpw(2, 3 / 192))


def test_jaccard():
    a = {"x": torch.tensor([True, True, False]), "y": torch.tensor([False, False])}
    b = {"x": torch.tensor([True, False, True]), "y": torch.tensor([False, False])}
    j = jaccard(a, b)
    assert j["x"] == pytest.approx(1 / 3)
    assert j["y"] != j["y"]  # nan


def test_sampled_cut_gives_the_exact_ranking(monkeypatch):
    """The fast cut on large inputs ranks exactly as a full kthvalue does, ties included."""
    import tacq.circuit.select as sel

    g = torch.Generator().manual_seed(3)
    scores = {"a": torch.rand(900, 1000, generator=g), "b": torch.rand(700, 1500, generator=g)}
    scores["a"][::7] = 0.999  # a block of ties right inside the kept set
    monkeypatch.setattr(sel, "SAMPLE", 200_000)  # 1.95M scores > 4 x sample: sampled path
    fast = sel.rank(scores, 0.02)
    monkeypatch.setattr(sel, "SAMPLE", 10**9)  # exact kthvalue path
    exact = sel.rank(scores, 0.02)
    assert torch.equal(fast.order, exact.order)
    assert torch.equal(fast.scores_sorted, exact.scores_sorted)
