"""A Study on the tiny model: caches hit, the slider is a lookup, variants are named."""

from __future__ import annotations

import pytest
import torch

from tacq.errors import TacqError
from tacq.models import quantizable_linears
from tacq.workflow import Study


def test_collect_twice_is_a_cache_hit(tiny_lm, tiny_task):
    first = Study(tiny_lm, tiny_task).collect()
    again = Study(tiny_lm, tiny_task).collect()
    assert not first.from_cache and again.from_cache
    for n, G in first.abs_grad.items():
        assert torch.equal(G, again.abs_grad[n])


def test_ratio_change_counts_and_bits(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    study.collect()
    r = study.ranking("tacq", bits=2)
    small, big = study.size_at(r, 0.001, 2), study.size_at(r, 0.01, 2)
    N = sum(m.weight.numel() for m in quantizable_linears(tiny_lm.model).values())
    assert (small.n_kept, big.n_kept) == (int(0.001 * N), int(0.01 * N))
    assert big.bpw_paper > small.bpw_paper > 2
    assert big.total_bytes > small.total_bytes


def test_variant_keeps_top_scores_and_reference_is_reused(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    study.collect()
    v = study.quantize(bits=2, ratio=0.01, metric="qal")
    assert v.name == "qal-2bit-1.00%"
    masks = study.ranking("qal", 2).masks(0.01)
    for name, lq in v.result.layers.items():
        assert torch.equal(lq.keep_mask, masks[name])
    ref = study.quantize(bits=2, ratio=0.0)
    assert ref.name == "gptq-2bit" and ref.result is study.refs[(2, "gptq")]
    with pytest.raises(TacqError, match="between 0 and"):
        study.quantize(bits=2, ratio=0.7)
    with pytest.raises(TacqError, match="2, 3 or 4"):
        study.quantize(bits=5, ratio=0.01)
