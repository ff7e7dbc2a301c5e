"""The run plan counts parameters exactly and refuses a run that cannot fit."""

from __future__ import annotations

import pytest

from tacq.errors import TacqError
from tacq.models import quantizable_linears
from tacq.plan import PRESETS, RunSettings, Shapes, check_fits, plan_run


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
    from tacq.plan import fitting_accumulator

    shapes = Shapes.from_config(PRESETS["llama-3-8b"])
    gpu = RunSettings(128, 2048, 1, dtype_bytes=2, shared_memory=False)
    assert fitting_accumulator(shapes, gpu, 1e14, 80 * 2**30, None).accum_bytes == 4
    tight = fitting_accumulator(shapes, gpu, 1e14, 45 * 2**30, None)
    assert (tight.accum_bytes, tight.accum_on_host) == (2, False)
    host = fitting_accumulator(shapes, gpu, 1e14, 30 * 2**30, 200 * 2**30)
    assert (host.accum_bytes, host.accum_on_host) == (4, True)
