"""The CUDA path, against the CPU one: gradients, masked GPTQ, packed variants and their
export, streaming chat, and a cancelled --stream-to run. Skipped without CUDA.

Imports nothing from app/ (the GPU machine has no gradio) and builds tiny random models
in memory (no downloads).
"""

from __future__ import annotations

import pytest
import torch

from tacq.circuit.select import Selection
from tacq.errors import Cancelled
from tacq.models import LoadedModel
from tacq.quant.recipe import Recipe
from tacq.study.workflow import Study
from tests.conftest import _char_tokenizer
from tests.tiny import fp16_exact, make_tiny_llama

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _lm(device: str) -> LoadedModel:
    model = fp16_exact(make_tiny_llama()).to(device)
    return LoadedModel(model, _char_tokenizer(), "tiny", "memory", f"tiny-{device}")


def test_gradients_on_cuda_equal_cpu(tiny_task):
    cpu, gpu = Study(_lm("cpu"), tiny_task), Study(_lm("cuda"), tiny_task)
    a, b = cpu.collect(), gpu.collect()
    for name, g in a.abs_grad.items():
        torch.testing.assert_close(b.abs_grad[name].cpu(), g, atol=1e-4, rtol=1e-3)


def test_masked_gptq_on_cuda_matches_cpu(tiny_task):
    cpu, gpu = Study(_lm("cpu"), tiny_task), Study(_lm("cuda"), tiny_task)
    cpu.collect()
    gpu.collect()
    sel = Selection("tacq", 3, 0.02)
    a, b = cpu.quantize(Recipe.of(sel)), gpu.quantize(Recipe.of(sel))
    same = total = 0
    for name, lq in a.result.layers.items():
        other = b.result.layers[name]
        assert torch.equal(lq.keep_mask, other.keep_mask), name
        same += int((lq.codes == other.codes.cpu()).sum())
        total += lq.codes.numel()
    assert same / total > 0.99  # float order differs; a code may flip at a rounding edge


def test_packed_variant_on_cuda_matches_its_export(tiny_task, tmp_path):
    from tacq.formats.export import load_quantized, save_packed

    lm = _lm("cuda")
    study = Study(lm, tiny_task)
    study.collect()
    v = study.quantize(Recipe.of(Selection("tacq", 2, 0.02)))
    folder = save_packed(tmp_path / "v", lm, v)
    loaded = load_quantized(folder, device="cuda")
    ids = torch.randint(3, 99, (2, 12), device="cuda")
    with torch.no_grad():
        mine, theirs = v.model(input_ids=ids).logits, loaded(input_ids=ids).logits
    torch.testing.assert_close(mine, theirs, atol=1e-3, rtol=1e-3)
    cpu = load_quantized(folder, device="cpu")
    with torch.no_grad():
        ref = cpu(input_ids=ids.cpu()).logits
    torch.testing.assert_close(mine.float().cpu(), ref, atol=2e-2, rtol=2e-2)


def test_streaming_chat_on_cuda():
    from app.chat_stream import stream_chat

    lm = _lm("cuda")
    chunks = list(stream_chat(lm.model, lm.tokenizer, [{"role": "user", "content": "hot ->"}], 8))
    assert chunks and isinstance(chunks[-1], str) and len(chunks[-1]) > 0


def test_cancelled_stream_to_cuda_restores_every_device(tiny_task):
    lm = _lm("cpu")
    before = {n: p.clone() for n, p in lm.model.state_dict().items()}
    study = Study(lm, tiny_task, exec_device="cuda")
    study.collect()
    calls = {"n": 0}

    def stop_at_third(frac: float, label: str) -> None:
        calls["n"] += 1
        if calls["n"] >= 3:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        study.quantize(Recipe.of(Selection("tacq", 2, 0.02)), stop_at_third)
    for name, t in [*lm.model.named_parameters(), *lm.model.named_buffers()]:
        assert t.device.type == "cpu", name
    for name, p in lm.model.state_dict().items():
        assert torch.equal(p, before[name]), name
    v = study.quantize(Recipe.of(Selection("tacq", 2, 0.02)))  # and the study still works
    assert v.size.n_kept > 0
