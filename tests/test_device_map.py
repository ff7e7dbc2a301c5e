"""A model placed by accelerate's device_map gives the same gradients and quantization."""

from __future__ import annotations

import pytest
import torch

from tacq.circuit.gradients import GradientConfig, collect_abs_grads
from tacq.data.tasks import DataConfig
from tacq.errors import TacqError
from tacq.formats.grid import GPTQConfig
from tacq.models import input_device, load_model
from tacq.quant.quantize import quantize_model
from tacq.study.workflow import Study


@pytest.fixture
def tiny_folder(tmp_path, tiny_lm):
    folder = tmp_path / "tiny-llama"
    tiny_lm.model.save_pretrained(str(folder), safe_serialization=True)
    tiny_lm.tokenizer.save_pretrained(str(folder))
    return folder


def test_device_map_auto_matches_plain_load(tiny_folder, tiny_task, monkeypatch):
    import transformers

    seen: list[dict] = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    plain = load_model(tiny_folder, device="cpu")
    budget = {"cpu": "2GiB"}
    mapped = load_model(tiny_folder, device_map="auto", max_memory=budget)
    assert "device_map" not in seen[0]
    assert seen[1]["device_map"] == "auto" and seen[1]["max_memory"]["cpu"] in ("2GiB", 2**31)
    assert budget == {"cpu": "2GiB"}  # the caller's dict is left alone
    assert input_device(mapped.model) == torch.device("cpu")
    batches = Study(plain, tiny_task, DataConfig(max_examples=6)).batches()
    cfg = GradientConfig(batch_size=3)
    ref = collect_abs_grads(plain.model, batches, cfg)
    got = collect_abs_grads(mapped.model, batches, cfg)
    for name, G in ref.abs_grad.items():
        assert G.abs().max() > 0
        torch.testing.assert_close(got.abs_grad[name], G, rtol=1e-5, atol=1e-8)
    q_ref = quantize_model(plain.model, batches, GPTQConfig(bits=3))
    q_got = quantize_model(mapped.model, batches, GPTQConfig(bits=3))
    for name, lq in q_ref.layers.items():
        assert torch.equal(q_got.layers[name].codes, lq.codes)


def test_device_map_rejects_unknown_strategy(tiny_folder):
    with pytest.raises(TacqError, match="device_map must be"):
        load_model(tiny_folder, device_map="everywhere")
