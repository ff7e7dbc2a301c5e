"""A user's finished variants survive a restart; a damaged one is skipped, not fatal."""

from __future__ import annotations

import torch

from app.state import UserState
from tacq.workflow import Study


def test_variants_survive_a_restart(tiny_lm, tiny_task, tmp_path):
    study = Study(tiny_lm, tiny_task)
    study.collect()
    user = UserState("a" * 32, tmp_path)
    v = study.quantize(3, 0.01, "tacq")
    user.add_variant(v, tiny_lm)
    gone = study.quantize(2, 0.0)
    user.add_variant(gone, tiny_lm)
    user.delete_variant(gone.name)

    again = UserState("a" * 32, tmp_path)  # a new process: nothing in memory
    assert again.restore_variants(tiny_lm) == [v.name]
    back = again.variants[v.name]
    ids = torch.tensor([[5, 17, 33, 60, 2, 90]])
    with torch.no_grad():
        assert torch.equal(back.model(ids).logits, v.model(ids).logits)
    assert back.size.n_kept == v.size.n_kept and back.size.total_bytes == v.size.total_bytes
    assert back.settings["metric"] == "tacq" and back.settings["bits"] == 3

    other = UserState("b" * 32, tmp_path)
    assert other.restore_variants(tiny_lm) == []  # another user's variants stay theirs


def test_damaged_variant_is_skipped(tiny_lm, tiny_task, tmp_path):
    study = Study(tiny_lm, tiny_task)
    user = UserState("c" * 32, tmp_path)
    user.add_variant(study.quantize(2, 0.0, method="rtn"), tiny_lm)
    weights = next((user.folder / "variants").glob("*/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated by a crash or a full disk
    again = UserState("c" * 32, tmp_path)
    assert again.restore_variants(tiny_lm) == []


def test_names_cannot_leave_the_workspace(tmp_path):
    """A variant named like a path still saves inside the user's own folder."""
    user = UserState("d" * 32, tmp_path)
    for name in ("../../etc/passwd", "/abs/path", "a/../../b", "..", "~root"):
        target = user._variant_dir(name).resolve()
        assert target.is_relative_to((user.folder / "variants").resolve()), name
        assert target != (user.folder / "variants").resolve()
