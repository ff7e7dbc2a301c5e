"""bench/scale.py's pieces at tiny shapes: the fits, the model builder, the stage loop."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def scale(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.delitem(sys.modules, "scale", raising=False)
    import scale

    return scale


def test_growth_exponent_recovers_a_power_law(scale):
    xs = [135e6, 362e6, 1.1e9]
    assert scale.growth_exponent(xs, [3e-6 * x**1.7 for x in xs]) == pytest.approx(1.7)
    assert scale.growth_exponent(xs, [5.0, 5.0, 5.0]) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        scale.growth_exponent([1e6, 1e6], [1.0, 2.0])


def test_time_factors_are_the_geometric_mean_over_the_small_shapes(scale):
    def row(shape, grad_s, gptq_s):  # 1e12 FLOPs at 1e11 FLOP/s: 10 s estimated each
        plan = {s: {"flops": 1e12} for s in scale.TIMED_PLAN_STAGES}
        measured = {
            "gradients": {"seconds": grad_s},
            "GPTQ reference + masked": {"seconds": gptq_s},
        }
        return {"shape": shape, "flops_per_s": 1e11, "plan": plan, "measured": measured}

    rows = [row("smollm2-135m", 20, 10), row("smollm2-360m", 80, 40), row("tinyllama-1.1b", 1, 1)]
    got = scale.fit_time_factors(rows)
    assert got["gradients"] == pytest.approx(4.0)  # sqrt(2 * 8); the 1.1B row is not fitted on
    assert got["GPTQ reference + masked"] == pytest.approx(2.0)


def test_built_model_is_the_config_the_plan_counts(scale, tiny_lm):
    from tacq.shapes import Shapes

    shape = dict(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    for tied in (True, False):
        config = scale.llama_config({**shape, "tie_word_embeddings": tied})
        lm = scale.build_lm(config, tiny_lm.tokenizer, f"tiny-{tied}")
        params = sum(p.numel() for p in lm.model.parameters())
        assert params == Shapes.from_config(config).params
        assert next(lm.model.parameters()).dtype.is_floating_point
        assert lm.model.config.max_position_embeddings == 2048
        assert lm.model.config.tie_word_embeddings is tied
        assert lm.fingerprint == f"scale-tiny-{tied}-seed0"


def test_every_stage_gets_a_time_a_peak_and_its_bytes(scale, tiny_lm, tiny_task):
    run = scale.run_stages(tiny_lm, tiny_task, examples=8, new_tokens=4)
    assert list(run["stages"]) == list(scale.STAGES)
    for name, st in run["stages"].items():
        assert st["seconds"] > 0, name
        assert st["peak_rss_bytes"] > 10 * 2**20, name  # at least the interpreter
    assert run["stages"]["collect"]["disk_bytes"] > 0  # the gradient cache
    assert run["stages"]["reference GPTQ"]["disk_bytes"] > 0  # the reference cache
    assert run["stages"]["packed variant"]["disk_bytes"] > 0  # the saved variant
    assert run["calib_tokens"] > 0 and len(run["batch_lengths"]) == 1


def test_peak_rss_resets_between_stages(scale):
    scale.reset_peak_rss()
    before = scale.peak_rss_bytes()
    block = bytearray(200 * 2**20)
    block[::4096] = b"\1" * len(block[::4096])  # touch every page
    high = scale.peak_rss_bytes()
    del block
    scale.reset_peak_rss()
    assert high - before > 150 * 2**20
    assert scale.peak_rss_bytes() < high - 150 * 2**20


def test_the_plan_uses_the_cpu_factors_fitted_in_scale_json():
    """tacq.study.plan's CPU time factors are the ones bench/scale.py fitted (2 decimals), and
    the gradient stage's time on cpu carries its factor."""
    from tacq.shapes import Shapes
    from tacq.study import plan
    from tacq.study.plan import RunSettings, plan_run

    fitted = json.loads((BENCH / "results" / "scale.json").read_text())["fitted_time_factors"]
    assert plan.CPU_GRADIENT_FACTOR == pytest.approx(fitted["gradients"], abs=0.005)
    assert plan.CPU_LATENCY_FACTOR == pytest.approx(fitted["GPTQ reference + masked"], abs=0.005)
    shapes = Shapes.from_config(plan.PRESETS["llama-3-8b"])
    cpu = plan_run(shapes, RunSettings(latency_factor=plan.CPU_LATENCY_FACTOR), 1e11)
    assert cpu[0].seconds == pytest.approx(plan.CPU_GRADIENT_FACTOR * cpu[0].flops / 1e11)
    assert cpu[1].seconds == pytest.approx(plan.CPU_LATENCY_FACTOR * cpu[1].flops / 1e11)
    gpu = plan_run(shapes, RunSettings(dtype_bytes=2, shared_memory=False), 1e14)
    assert gpu[0].seconds == pytest.approx(gpu[0].flops / 1e14)  # not fitted on a GPU


@pytest.mark.slow  # reads the bundled SmolLM2's tokenizer (converting the GGUF once)
def test_cut_tokenizer_stays_in_a_32k_vocabulary(scale, tmp_path):
    from transformers import AutoTokenizer

    from tacq.data.reading import load_task
    from tacq.models import default_model_dir

    full = AutoTokenizer.from_pretrained(str(default_model_dir()), local_files_only=True)
    cut = scale.truncated_tokenizer(full, 32000, tmp_path)
    assert len(cut) == 32000
    chat = [{"role": "user", "content": scale.CHAT_PROMPT}]
    texts = [e.prompt + e.answer for e in load_task("antonyms").calib[:32]]
    texts.append(cut.apply_chat_template(chat, add_generation_prompt=True, tokenize=False))
    for text in texts:
        ids = cut(text, add_special_tokens=False)["input_ids"]
        assert max(ids) < 32000
        assert cut.decode(ids) == text
        assert len(ids) >= len(full(text, add_special_tokens=False)["input_ids"])
    assert cut.eos_token_id == full.eos_token_id and cut.chat_template == full.chat_template
