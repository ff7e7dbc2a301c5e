"""Scores saved for notebooks load back into a Study, equal, and without recomputing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tacq.circuit.score_export import attach, load_scores, save_scores
from tacq.circuit.select import Selection
from tacq.errors import TacqError
from tacq.study.workflow import Study


@pytest.fixture
def study(tiny_lm, tiny_task):
    s = Study(tiny_lm, tiny_task)
    s.collect()
    return s


def test_round_trip_equals_and_skips_recomputing(study, tmp_path, monkeypatch):
    sel = Selection("tacq", bits=2, ratio=0.01)
    folder = save_scores(study, tmp_path / "s", ["tacq", "magnitude"], sel)
    meta = json.loads((folder / "scores.json").read_text())
    assert meta["metrics"] == ["tacq", "magnitude"] and meta["ratio"] == 0.01
    assert meta["examples_digest"] == study.digest()
    saved = load_scores(folder)
    for metric in ("tacq", "magnitude"):
        want = study.ranking(sel.at(metric=metric))
        got = saved.rankings[metric]
        assert torch.equal(got.order, want.order) and got.names == want.names
        assert got.k_at(0.01) == want.k_at(0.01)
        masks = want.masks(0.01)
        assert all(torch.equal(saved.masks[metric][n], masks[n]) for n in masks)
        scores = study.scores(sel.at(metric=metric))
        for n, t in scores.items():
            assert saved.scores[metric][n].dtype == torch.float16
            assert torch.allclose(saved.scores[metric][n].float(), t, rtol=1e-3, atol=1e-6)
    fresh = Study(study.lm, study.task)  # no gradients collected, nothing cached
    sels = attach(fresh, saved)
    monkeypatch.setattr(fresh.scorer, "scores", lambda *a: pytest.fail("recomputed scores"))
    assert torch.equal(fresh.ranking(sels[0]).order, study.ranking(sel).order)
    heads = fresh.anatomy(sels[0], "query")
    assert heads["kept"].sum() + fresh.anatomy(sels[0], "kv")["kept"].sum() > 0


def test_refuses_other_examples_and_damaged_files(study, tmp_path, tiny_lm, tiny_task):
    from dataclasses import replace

    folder = save_scores(study, tmp_path / "s", ["magnitude"], Selection("magnitude", 2, 0.01))
    other = Study(tiny_lm, replace(tiny_task, calib=tiny_task.calib[:4]))
    with pytest.raises(TacqError, match="other examples"):
        attach(other, load_scores(folder))
    data = (folder / "scores.safetensors").read_bytes()
    (folder / "scores.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(TacqError, match="damaged"):
        load_scores(folder)
    with pytest.raises(TacqError, match="not a tacq scores folder"):
        load_scores(tmp_path / "nothing")
    with pytest.raises(TacqError, match="at least one metric"):
        save_scores(study, tmp_path / "t", [], Selection("magnitude", 2, 0.01))


def test_file_reads_with_plain_safetensors(study, tmp_path):
    folder = save_scores(study, tmp_path / "s", ["msg"], Selection("msg", 2, 0.01))
    flat = load_file(str(folder / "scores.safetensors"))
    name = "model.layers.0.mlp.down_proj"
    assert flat[f"scores/msg/{name}"].shape == study.lm.model.get_submodule(name).weight.shape
    assert flat[f"masks/msg/{name}"].dtype == torch.bool
