"""Checkpoints and saved workspace variants written before the renovation still load.

tests/fixtures/packed_v1 was written by the code of stop 13 (format 1: the examples digest
stored as 'task_hash', no group_size); packed_v1.expected.json holds what that code read
back from it. Both the export loader and a user's saved variants (the same format) must
give the same spec, sizes and logits today.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tacq.formats.export import read_packed
from tacq.quant.variant import VariantSpec, load_variant

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "packed_v1"
EXPECTED = json.loads((FIXTURE.parent / "packed_v1.expected.json").read_text())


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor(EXPECTED["input_ids"])).logits.double()


def test_format1_checkpoint_loads_with_the_same_spec_and_logits():
    v = load_variant(FIXTURE)
    old = EXPECTED["loaded_settings"]
    assert v.spec == VariantSpec(
        old["bits"],
        old["ratio"],
        old["metric"],
        old["method"],
        None,
        old["task"],
        old["examples"],
        old["base_model"],
    )
    assert v.name == EXPECTED["name"] == v.spec.name
    assert v.size.n_kept == EXPECTED["n_kept"]
    assert v.size.bpw_paper == pytest.approx(EXPECTED["bpw_paper"], abs=1e-12)
    logits = _logits(v.model)
    # fp32 matmuls sum in a CPU-dependent order (seen: 1.5e-7 apart on another Xeon); a
    # misread code, scale or kept weight moves these sums by far more than 1e-5
    assert float(logits.sum()) == pytest.approx(EXPECTED["logits_sum"], abs=1e-5)
    assert float(logits.abs().sum()) == pytest.approx(EXPECTED["logits_abs_sum"], rel=1e-6)


def test_format1_saved_variant_restores_in_the_app(tmp_path, tiny_lm):
    from app.state import UserState

    user = UserState("f" * 32, tmp_path)
    shutil.copytree(FIXTURE, user.folder / "variants" / "old-one")
    assert user.restore_variants(tiny_lm) == [EXPECTED["name"]]  # same base model fingerprint
    assert user.variants[EXPECTED["name"]].spec.examples == EXPECTED["settings"]["examples"]


def test_spec_round_trips_through_a_new_export(tmp_path, tiny_lm):
    from tacq.formats.export import save_packed

    v = load_variant(FIXTURE)
    save_packed(tmp_path / "again", tiny_lm, v)
    _, qc = read_packed(tmp_path / "again")
    assert VariantSpec.from_config(qc) == v.spec
    assert "task_hash" not in qc and qc["examples"] == v.spec.examples
    assert torch.equal(_logits(load_variant(tmp_path / "again").model), _logits(v.model))


def test_load_check_answers_with_the_loaded_model():
    """`python -m tacq load-check`: describe, load and answer one prompt as a user would."""
    from transformers import AutoTokenizer

    from tacq.eval.evaluate import generate_batch
    from tacq.formats.export import load_check

    check = load_check(FIXTURE, "hot -> toh\nbig ->")
    assert check.info["bits"] == 3 and check.info["kept weights"] == EXPECTED["n_kept"]
    tok = AutoTokenizer.from_pretrained(str(FIXTURE))
    model = load_variant(FIXTURE).model
    assert check.answer == generate_batch(model, tok, ["hot -> toh\nbig ->"], "completion", 16)[0]
