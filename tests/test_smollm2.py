"""End-to-end on the real SmolLM2-135M-Instruct (small settings; part of CI)."""

from __future__ import annotations

import shutil

import pytest
import torch

from tacq.circuit.select import Selection
from tacq.data.reading import load_task
from tacq.data.tasks import DataConfig
from tacq.eval.evaluate import EvalConfig, evaluate
from tacq.formats.export import describe_packed, load_quantized, save_packed
from tacq.models import load_model
from tacq.quant.recipe import Recipe
from tacq.quant.variant import load_variant
from tacq.study.workflow import Study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm():
    return load_model("default")


@pytest.fixture(scope="module")
def study(lm, tmp_path_factory):
    home = tmp_path_factory.mktemp("smollm2_home")
    with pytest.MonkeyPatch.context() as mp:  # undone when the module's tests are done
        mp.setenv("TACQ_HOME", str(home))
        s = Study(lm, load_task("antonyms"), DataConfig(max_length=128, max_examples=8))
        s.collect()
        yield s
    shutil.rmtree(home, ignore_errors=True)  # a 1.3 GB gradient cache; CI disks are small


def test_default_model_loads_with_its_facts(lm):
    info = lm.summary()
    assert info["layers"] == 30 and info["quantizable weights"] == 106_168_320
    again = load_model("default")
    ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, again.model(ids).logits)


def test_3bit_tacq_beats_2bit_rtn_on_heldout(study, lm, tmp_path):
    held = list(study.task.heldout[:24])  # the first 24: a fixed subset, CI time stays flat
    cfg = EvalConfig(max_new_tokens=6)
    fp, lp = evaluate(lm.model, lm.tokenizer, held, "completion", "fp", cfg)
    tacq3 = study.quantize(Recipe.of(Selection("tacq", bits=3, ratio=0.0035)))
    rtn2 = study.quantize(Recipe.of(Selection(bits=2, ratio=0.0), method="rtn"))
    r3, _ = evaluate(tacq3.model, lm.tokenizer, held, "completion", tacq3.name, cfg, lp)
    r2, _ = evaluate(rtn2.model, lm.tokenizer, held, "completion", rtn2.name, cfg, lp)
    assert fp.exact_match >= 0.4  # the task is one the model can do
    assert r3.answer_nll < r2.answer_nll
    assert r3.kl_to_fp < r2.kl_to_fp
    assert r3.exact_match >= r2.exact_match
    assert tacq3.size.bpw_paper == pytest.approx(3.1015, abs=1e-3)

    # export -> load onto the original (as the app restores it) gives the same logits; alone,
    # the file's fp16 embeddings and norms (SmolLM2's are fp32) move them a little
    folder = save_packed(tmp_path / "tacq3", lm, tacq3)
    ids = lm.tokenizer("hot -> cold\nbig -> small\nfast ->", return_tensors="pt").input_ids
    with torch.no_grad():
        mine = tacq3.model(ids).logits
        assert torch.equal(load_variant(folder, lm.model).model(ids).logits, mine)
        alone = load_quantized(folder)(ids).logits
    assert (alone - mine).abs().max() < 0.05 and torch.equal(alone.argmax(-1), mine.argmax(-1))
    info = describe_packed(folder)
    on_disk = (folder / "model.safetensors").stat().st_size
    assert abs(on_disk - tacq3.size.total_bytes) / tacq3.size.total_bytes < 0.01
    assert info["kept weights"] == tacq3.size.n_kept
