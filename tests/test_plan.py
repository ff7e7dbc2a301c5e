"""The run plan counts parameters exactly and refuses a run that cannot fit."""

from __future__ import annotations

import pytest

from tacq.errors import TacqError
from tacq.models import quantizable_linears
from tacq.shapes import Shapes
from tacq.study.plan import PRESETS, RunSettings, check_fits, plan_run


def test_shapes_count_the_real_model(tiny_llama):
    shapes = Shapes.from_config(tiny_llama.config.to_dict())
    assert shapes.params == sum(p.numel() for p in tiny_llama.parameters())
    assert shapes.quantizable == sum(
        m.weight.numel() for m in quantizable_linears(tiny_llama).values()
    )


def test_llama3_8b_preset_has_8b_parameters():
    assert Shapes.from_config(PRESETS["llama-3-8b"]).params == 8_030_261_248


def test_plan_refuses_what_does_not_fit_and_options_shrink_it():
    shapes = Shapes.from_config(PRESETS["llama-3-8b"])
    gpu = {"examples": 128, "max_length": 2048, "batch_size": 1, "dtype_bytes": 2}
    full = RunSettings(**gpu, shared_memory=False, accum_stats=3)
    lean = RunSettings(**gpu, shared_memory=False)  # the default: |g| sums only
    assert lean.accum_stats == 1
    stages = plan_run(shapes, full, 1e14)
    with pytest.raises(TacqError, match="gradients needs about"):
        check_fits(stages, 80 * 2**30, None)
    lean_stages = plan_run(shapes, lean, 1e14)
    check_fits(lean_stages, 80 * 2**30, None)  # |g| sums only: fits on one 80 GB GPU
    saved = stages[0].device_bytes - lean_stages[0].device_bytes
    assert saved == 2 * shapes.quantizable * 4  # exactly the two extra fp32 sums


def test_the_plan_puts_the_sums_where_a_collection_would():
    """fp32 on the device when the gradient stage fits, else bf16, else fp32 on the host;
    the header says which."""
    from tacq.study.plan import fitting_accumulator

    shapes = Shapes.from_config(PRESETS["llama-3-8b"])
    gpu = RunSettings(128, 2048, 1, dtype_bytes=2, shared_memory=False)
    assert fitting_accumulator(shapes, gpu, 1e14, 80 * 2**30, None).accum_bytes == 4
    tight = fitting_accumulator(shapes, gpu, 1e14, 45 * 2**30, None)
    assert (tight.accum_bytes, tight.accum_on_host) == (2, False)
    host = fitting_accumulator(shapes, gpu, 1e14, 30 * 2**30, 200 * 2**30)
    assert (host.accum_bytes, host.accum_on_host) == (4, True)


EIGHT_B_GPU = ["plan", "--model", "llama-3-8b", "--device", "cuda", "--tflops", "400"]


def test_planning_a_rented_machine_never_reads_this_ones_memory(monkeypatch, capsys):
    """--memory-gb / --tflops describe another machine: this one's free memory (here made
    tiny) is not checked; --host-memory-gb is that machine's host memory."""
    from tacq.cli.main import main

    monkeypatch.setenv("TACQ_MEMORY_BUDGET_MB", "100")
    assert main([*EIGHT_B_GPU, "--memory-gb", "80"]) == 0
    out = capsys.readouterr().out
    assert "host memory not checked" in out and out.rstrip().endswith("fits.")
    # the 8B verdict with the lean defaults: fits 80 GB of GPU and 128 GB of host memory
    assert main([*EIGHT_B_GPU, "--memory-gb", "80", "--host-memory-gb", "128"]) == 0
    out = capsys.readouterr().out
    assert "fp32 on the device" in out and "packed variant" in out
    assert main([*EIGHT_B_GPU, "--memory-gb", "80", "--host-memory-gb", "16"]) != 0
    assert "GB of host memory; 16.0 GB are free" in capsys.readouterr().err


def test_a_model_too_large_for_this_machine_is_refused_before_loading(
    tmp_path, tiny_lm, monkeypatch
):
    from tacq.errors import TacqError
    from tacq.models import load_model

    folder = tmp_path / "tiny"
    tiny_lm.model.save_pretrained(str(folder), safe_serialization=True)
    tiny_lm.tokenizer.save_pretrained(str(folder))
    monkeypatch.setenv("TACQ_MEMORY_BUDGET_MB", "0.01")
    built = []
    monkeypatch.setattr(
        "transformers.AutoModelForCausalLM.from_pretrained", lambda *a, **k: built.append(a)
    )
    with pytest.raises(TacqError, match=r"GB are free there\. `python -m tacq plan --model"):
        load_model(str(folder), "cpu")
    assert not built  # refused before transformers built anything
