"""Where a gradient pass keeps its running sums, chosen before it starts.

Why: the sums are 4 bytes per quantizable weight and per statistic in fp32, as large as
the fp32 model itself. Exact fp32 on the model's device is preferred; when that would not
fit beside the weights and the pass's working memory (tacq.study.plan), bf16 on the device halves
them (its top-k overlap with fp32 is measured in bench/results/accumulators.json), and
else they go to host memory in fp32 (slower: each sample's product crosses the bus).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from tacq.circuit.gradients import GradientConfig
from tacq.errors import TacqError
from tacq.memory import HEADROOM, available_bytes
from tacq.models import quantizable_linears
from tacq.shapes import Shapes, gradient_working_bytes

CHOICES = (("float32", "model"), ("bfloat16", "model"), ("float32", "cpu"))


def sum_device(model: nn.Module) -> torch.device:
    """The device the sums would sit on: the quantizable weights' (cpu when spread over
    several devices or offloaded: each sum then follows its own weight, see _Accumulator)."""
    devices = {m.weight.device for m in quantizable_linears(model).values()}
    return devices.pop() if len(devices) == 1 else torch.device("cpu")


def device_free_bytes(device: torch.device) -> int | None:
    """Free memory on `device` now (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_bytes()


def working_bytes(model: nn.Module, batch_size: int, max_length: int) -> int:
    """tacq.study.plan's estimate of a gradient pass's working memory (0 for a config it cannot
    read: the sums' own size still decides)."""
    try:
        shapes = Shapes.from_config(model.config.to_dict())
    except (AttributeError, KeyError, TypeError):
        return 0
    dtype_bytes = next(model.parameters()).element_size()
    return gradient_working_bytes(shapes, batch_size, max_length, dtype_bytes)


def choose_accumulator(
    model: nn.Module,
    cfg: GradientConfig,
    n_stats: int,
    batch_shape: tuple[int, int] = (8, 256),
) -> GradientConfig:
    """cfg with its "auto" accumulator fields resolved: the first of CHOICES that fits.

    n_stats: sums kept per weight (1 for |g|, 3 with Σg² and Σg). batch_shape: (batch size,
    tokens) of the pass. Refuses, with the numbers, when none fits.
    """
    n = sum(m.weight.numel() for m in quantizable_linears(model).values())
    device = sum_device(model)
    free_dev = device_free_bytes(device)
    free_host = available_bytes()
    work = working_bytes(model, *batch_shape)
    on_host = device.type == "cpu"
    for dtype, where in CHOICES:
        if cfg.accum_dtype not in ("auto", dtype) or cfg.accum_device not in ("auto", where):
            continue
        need = n * n_stats * (4 if dtype == "float32" else 2)
        if where == "model":
            fits = free_dev is None or (need + work) * HEADROOM <= free_dev
        else:  # host memory; on a cpu model the same memory as the device
            fits = free_host is None or need * HEADROOM + (work if on_host else 0) <= free_host
        if fits:
            return replace(cfg, accum_dtype=dtype, accum_device=where)
    sums = n * n_stats * 2 / 2**30
    raise TacqError(
        f"No room for the gradient sums: even in bf16 they need {sums:.1f} GB plus "
        f"{work / 2**30:.1f} GB of working memory, and "
        f"{(free_dev or 0) / 2**30:.1f} GB are free on {device.type}, "
        f"{(free_host or 0) / 2**30:.1f} GB on the host. Use fewer examples per batch or "
        "a shorter max length, or a machine with more memory."
    )
