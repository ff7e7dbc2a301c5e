"""Issue 42 items 1-2: |g| only by default, Σg² and Σg from a second cached pass on demand,
and accumulators chosen to fit (fp32 on the device, else bf16, else host memory)."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from tacq.circuit.accumulators import choose_accumulator
from tacq.circuit.gradients import GradientConfig, collect_abs_grads, grads_cache_path, grads_key
from tacq.circuit.select import Selection
from tacq.errors import TacqError
from tacq.study.workflow import Study


def test_the_default_sums_abs_g_only(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    stats = study.collect()
    assert stats.abs_grad and not stats.sq_grad and not stats.sum_grad
    with safe_open(str(grads_cache_path(study.grads_key())), "pt") as f:
        assert {k.split(".")[0] for k in f.keys()} == {"abs"}
    study.ranking(Selection("tacq", 2, 0.01))  # TaCQ reads |g| alone: no second pass
    assert not study.stats.sq_grad


def test_fisher_runs_a_second_cached_pass_that_leaves_abs_g_alone(tiny_lm, tiny_task):
    study = Study(tiny_lm, tiny_task)
    abs_before = study.collect().abs_grad
    seen = []
    study.ranking(Selection("fisher", 2, 0.01), lambda f, msg="": seen.append(msg))
    assert any("Σg²" in m for m in seen)  # the progress says which pass runs
    stats = study.stats
    assert stats.abs_grad is abs_before  # |g| was not summed again
    one_pass = Study(tiny_lm, tiny_task, grad_cfg=GradientConfig(extra_stats=True)).collect()
    for name, sq in one_pass.sq_grad.items():
        torch.testing.assert_close(stats.sq_grad[name], sq, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(stats.sum_grad[name], one_pass.sum_grad[name])
    # the second pass has its own cache file, read by the next study of the same run
    again = Study(tiny_lm, tiny_task)
    again.collect()
    calls = []
    again.scorer.more_stats = lambda p: calls.append(p) or again.collect_extra(p)
    again.ranking(Selection("signed_grad", 2, 0.01))
    assert len(calls) == 1 and again.stats.sum_grad


def test_accumulators_fit_the_memory_there_is(tiny_llama, monkeypatch):
    n = sum(m.weight.numel() for m in tiny_llama.modules() if isinstance(m, torch.nn.Linear))
    cfg = GradientConfig()
    monkeypatch.setattr("tacq.circuit.accumulators.working_bytes", lambda *a: 0)
    monkeypatch.setenv("TACQ_MEMORY_BUDGET_MB", str(100))
    assert choose_accumulator(tiny_llama, cfg, 3).accum_dtype == "float32"
    # room for bf16 sums (2 bytes) but not fp32 ones (4), with the headroom of 1.25
    monkeypatch.setenv("TACQ_MEMORY_BUDGET_MB", str(n * 3 * 3 / 2**20))
    half = choose_accumulator(tiny_llama, cfg, 3)
    assert (half.accum_dtype, half.accum_device) == ("bfloat16", "model")
    monkeypatch.setenv("TACQ_MEMORY_BUDGET_MB", str(n / 2**20))
    with pytest.raises(TacqError, match="No room for the gradient sums"):
        choose_accumulator(tiny_llama, cfg, 3)
    # the device is full, the host is not: fp32 sums in host memory (a GPU model's case)
    monkeypatch.setattr("tacq.circuit.accumulators.device_free_bytes", lambda device: 0)
    monkeypatch.setenv("TACQ_MEMORY_BUDGET_MB", str(100))
    host = choose_accumulator(tiny_llama, cfg, 3)
    assert (host.accum_dtype, host.accum_device) == ("float32", "cpu")


def test_a_bf16_choice_is_said_and_stored_as_bf16(tiny_lm, tiny_task, monkeypatch):
    monkeypatch.setattr(
        "tacq.circuit.accumulators.choose_accumulator",
        lambda model, cfg, n, shape=(8, 256): GradientConfig(
            accum_dtype="bfloat16", accum_device="model"
        ),
    )
    study = Study(tiny_lm, tiny_task)
    stats = study.collect()
    assert stats.accumulator == "bf16 sums on the model's device"
    with safe_open(str(grads_cache_path(study.grads_key())), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
        assert f.metadata()["accumulator"] == stats.accumulator
    loaded = Study(tiny_lm, tiny_task).collect()
    assert loaded.from_cache and loaded.accumulator == stats.accumulator


def test_where_the_sums_were_kept_does_not_change_the_key():
    from tacq.data.tasks import DataConfig

    a = grads_key("m", "d", DataConfig(), GradientConfig(accum_device="cpu"))
    b = grads_key("m", "d", DataConfig(), GradientConfig(accum_device="model"))
    c = grads_key("m", "d", DataConfig(), GradientConfig(accum_dtype="bfloat16"))
    assert a == b != c


def test_the_second_pass_alone_does_not_sum_abs_g(tiny_llama):
    from tacq.data.batches import Encoded, make_batches

    batches = make_batches([Encoded(tuple(range(3, 12)), 3)], 1, 0)
    extra = collect_abs_grads(tiny_llama, batches, GradientConfig(), kinds=("sq", "sum"))
    assert not extra.abs_grad and extra.sq_grad and extra.sum_grad


def test_the_score_dropdown_says_which_scores_need_the_second_pass():
    from app.circuit_tab import METRIC_CHOICES, SECOND_PASS

    second = {name for label, name in METRIC_CHOICES if label.endswith(SECOND_PASS)}
    assert second == {"fisher", "signed_grad", "squeezellm"}
