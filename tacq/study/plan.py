"""Memory and time plan of a run, from the model's config alone (no weights are loaded).

Peak memory per stage is counted from tensor shapes (weights, gradient accumulators,
activations kept for backward, logits, Hessians, calibration activations). Time is FLOPs
divided by a throughput that is measured here by a short matmul on the chosen device, or
taken from `--tflops` for a device that is not present. Both are estimates: the point is to
refuse a run that cannot fit before it starts, and to size a GPU before renting one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from tacq.circuit.select import DEFAULT_RATIO
from tacq.errors import TacqError
from tacq.models import SEQUENTIAL_GROUPS
from tacq.shapes import Shapes, gradient_working_bytes

# Llama-3-8B's shapes, for planning (and benchmarking) without a download.
PRESETS: dict[str, dict] = {
    "llama-3-8b": dict(
        model_type="llama",
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=False,
    ),
}
GiB = 2**30


@dataclass(frozen=True)
class RunSettings:
    examples: int = 32
    max_length: int = 256
    batch_size: int = 8
    bits: int = 2
    ratio: float = DEFAULT_RATIO  # share of weights the variant keeps in 16 bits
    dtype_bytes: int = 4  # 4 for fp32 on cpu, 2 for bf16 on cuda
    accum_bytes: int = 4  # gradient accumulators: 4 fp32, 2 bf16
    # sums kept per weight: 1, |g| (the default: what TaCQ, QAL, MSG read); 3 with g^2 and g
    # in the same pass (the CLI, when a metric it runs reads them)
    accum_stats: int = 1
    accum_on_host: bool = False  # accumulators in host memory instead of the device
    # GPTQ's column loop runs far below matmul peak; the factor it is slower by
    # (CPU_LATENCY_FACTOR / CUDA_LATENCY_FACTOR below).
    latency_factor: float = 2.6
    shared_memory: bool = True  # the device is the host (cpu)


@dataclass(frozen=True)
class StagePlan:
    stage: str
    device_bytes: int
    host_bytes: int
    flops: float
    seconds: float


def read_config(model: str) -> dict:
    """A preset name, 'default' (the bundled model), or a folder with config.json."""
    if model in PRESETS:
        return PRESETS[model]
    if model in ("default", ""):
        from tacq.models import default_model_dir

        folder = default_model_dir()
    else:
        folder = Path(model).expanduser()
    path = folder / "config.json"
    if not path.exists():
        raise TacqError(
            f"No config.json in {folder}; give a model folder or one of {', '.join(PRESETS)}."
        )
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TacqError(f"{path} is not valid JSON: {e}") from e


def measured_flops(device: torch.device, dtype: torch.dtype, n: int = 1024) -> float:
    """Dense matmul throughput (FLOP/s) on `device`, measured now."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    reps, t = 5, time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def plan_run(s: Shapes, r: RunSettings, flops_per_s: float) -> list[StagePlan]:
    """Peak memory and time of each stage of a TaCQ run."""
    w = s.params * r.dtype_bytes
    tokens = r.examples * r.max_length
    # Gradients: weights + accumulators + the pass's working memory
    acc = s.quantizable * r.accum_bytes * r.accum_stats
    grad_dev = (
        w
        + gradient_working_bytes(s, r.batch_size, r.max_length, r.dtype_bytes)
        + (0 if r.accum_on_host else acc)
    )
    # fwd+bwd ~ 6 N per token; per-sample outer products 2 N_q per token (+ |.|, ^2, sum).
    grad_flops = tokens * (6 * s.params + 2 * s.quantizable * (1 + r.accum_stats / 4))
    stages = [
        StagePlan(
            "gradients",
            grad_dev,
            acc if r.accum_on_host else 0,
            grad_flops,
            (CPU_GRADIENT_FACTOR if r.shared_memory else 1.0) * grad_flops / flops_per_s,
        )
    ]
    # GPTQ (twice: the unmasked reference for dW, then the masked run). Per block: block
    # inputs and outputs for all calibration tokens, the largest group's Hessians, and one
    # Linear's working set (fp32 W, inverse Hessian, error block). Held meanwhile: the
    # gradient sums (host memory once collected) and both results, bit-packed.
    calib = 2 * tokens * s.hidden * r.dtype_bytes
    dims = {m: i for m, _, i in s.linears()}
    hess = 4 * max(sum(dims.get(m, 0) ** 2 for m in g) for g in SEQUENTIAL_GROUPS)
    work = max(3 * o * i * 4 + 2 * i * i * 4 for _, o, i in s.linears())
    # the reference and the masked run held bit-packed (tacq.formats.held), the masked one with
    # each kept weight's int32 index and fp16 value; keep masks are built one Linear at a
    # time (tacq.circuit.select.LayerMasks)
    largest = max(o * i for _, o, i in s.linears())
    results = int(s.quantizable * (2 * r.bits / 8 + 6 * r.ratio)) + largest
    # scores, their flat copy and a compare mask; large models rank one Linear at a time
    # and keep only ~2 % candidates (int64 index + fp32 score + int64 layer)
    ranking = 12 * s.quantizable if s.quantizable <= 500_000_000 else int(0.45 * s.quantizable)
    gptq_dev = w + calib + hess + work
    per_layer = sum(2 * o * i * i + i**3 / 3 + 2 * tokens * i * i for _, o, i in s.linears())
    block_fwd = 5 * 2 * tokens * sum(o * i for _, o, i in s.linears())  # 4 groups + output
    gptq_flops = 2 * s.layers * (per_layer + block_fwd)
    stages.append(
        StagePlan(
            "GPTQ reference + masked",
            gptq_dev,
            acc + results + ranking,
            gptq_flops,
            r.latency_factor * gptq_flops / flops_per_s,
        )
    )
    # a packed variant beside the original (tacq.memory.packed_estimate): codes at bits/8,
    # fp16 scale + uint8 zero per row, each kept weight's fp16 value and int32 index; every
    # other tensor is shared with the model. The reference stays, bit-packed.
    rows = s.layers * sum(o for _, o, _ in s.linears())
    variant = int(s.quantizable * (r.bits / 8 + 6 * r.ratio)) + 3 * rows
    reference = int(s.quantizable * r.bits / 8) + 3 * rows
    stages.append(StagePlan("packed variant", w + variant, acc + reference, 0.0, 0.0))
    if r.shared_memory:
        # cpu: host and device are the same memory, and the process keeps what a stage
        # freed (glibc handed 0.72 GB back only on malloc_trim after collecting, in
        # bench/scale.py): a stage's peak is at least the one before it.
        floor, merged = 0, []
        for p in stages:
            floor = max(floor, p.device_bytes + p.host_bytes)
            merged.append(StagePlan(p.stage, floor, 0, p.flops, p.seconds))
        stages = merged
    return stages


def format_plan(stages: list[StagePlan], device_free: int | None, host_free: int | None) -> str:
    lines = [f"{'stage':<26} {'device GB':>10} {'host GB':>8} {'est. time':>10}"]
    for p in stages:
        lines.append(
            f"{p.stage:<26} {p.device_bytes / GiB:>10.1f} {p.host_bytes / GiB:>8.1f} "
            f"{_hms(p.seconds):>10}"
        )
    peak = max(p.device_bytes for p in stages)
    total = sum(p.seconds for p in stages)
    free = "unknown" if device_free is None else f"{device_free / GiB:.1f} GB free"
    lines.append(f"peak device memory {peak / GiB:.1f} GB ({free}); total time {_hms(total)}")
    if host_free is not None:
        lines.append(
            f"host memory: {max(p.host_bytes for p in stages) / GiB:.1f} GB needed "
            f"beyond the device's share, {host_free / GiB:.1f} GB free"
        )
    return "\n".join(lines)


def check_fits(stages: list[StagePlan], device_free: int | None, host_free: int | None) -> None:
    """Refuse, naming the stage and the settings to change, when a stage will not fit."""
    for p in stages:
        if device_free is not None and p.device_bytes > device_free:
            raise TacqError(
                f"{p.stage} needs about {p.device_bytes / GiB:.1f} GB and the device has "
                f"{device_free / GiB:.1f} GB free. Lower --batch-size or --max-length, keep "
                "gradient sums on the host (--accum-on-host) or in bf16, or use more GPUs."
            )
        if host_free is not None and p.host_bytes > host_free:
            raise TacqError(
                f"{p.stage} needs {p.host_bytes / GiB:.1f} GB of host memory; "
                f"{host_free / GiB:.1f} GB are free."
            )


@dataclass(frozen=True)
class MachinePlan:
    """A run planned for a device: what `python -m tacq plan` prints and checks."""

    header: str
    stages: list[StagePlan]
    device_free: int | None
    host_free: int | None

    def text(self) -> str:
        return f"{self.header}\n{format_plan(self.stages, self.device_free, self.host_free)}"

    def check(self) -> None:
        check_fits(self.stages, self.device_free, self.host_free)


# Measured seconds over FLOPs / matmul throughput on the 2-core CPU, per stage: the
# geometric mean over the SmolLM2-135M and -360M shapes of bench/scale.py
# (bench/results/scale.json, fitted_time_factors); its TinyLlama-1.1B row checks them.
CPU_GRADIENT_FACTOR = 1.36  # batched per-sample gradients (hooks, per-sample products, |.|)
CPU_LATENCY_FACTOR = 5.66  # GPTQ's column loop and grid search, reference + masked
CUDA_LATENCY_FACTOR = 20.0  # a guess until bench/large_gpu.py has run on a GPU


def plan_here(
    model: str,
    settings: RunSettings,
    device: str | None = None,
    tflops: float | None = None,
    memory_gb: float | None = None,
    auto_accum: bool = False,
    host_memory_gb: float | None = None,
) -> MachinePlan:
    """Plan `model` (a name or folder; only config.json is read) on this machine's `device`.

    settings: examples, lengths, bits and accumulator choices; the device-dependent fields
    (dtype, latency factor, shared memory) are filled in here. tflops / memory_gb override
    what is measured, e.g. to plan for a GPU this machine does not have; host_memory_gb is
    that machine's host memory (given --memory-gb or --tflops without it, this machine's
    free memory says nothing about that one, and host memory is not checked). auto_accum: the
    gradient sums where a collection would put them (fp32 on the device, else bf16, else
    fp32 in host memory: tacq.circuit.accumulators), not where settings says.
    """
    from tacq.memory import available_bytes

    shapes = Shapes.from_config(read_config(model))
    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    settings = replace(
        settings,
        dtype_bytes=2 if cuda else 4,
        latency_factor=CUDA_LATENCY_FACTOR if cuda else CPU_LATENCY_FACTOR,
        shared_memory=not cuda,
    )
    if tflops:
        flops, how = tflops * 1e12, "given"
    elif cuda and not torch.cuda.is_available():
        raise TacqError("No CUDA device here: pass --tflops to plan for one.")
    else:
        dev = torch.device("cuda" if cuda else "cpu")
        flops, how = measured_flops(dev, torch.bfloat16 if cuda else torch.float32), "measured now"
    elsewhere = bool(memory_gb or tflops)  # a machine described, not this one
    host_given = None if host_memory_gb is None else int(host_memory_gb * 2**30)
    if memory_gb:
        device_free = int(memory_gb * 2**30)
    elif cuda and torch.cuda.is_available() and not elsewhere:
        device_free = torch.cuda.mem_get_info()[0]
    elif not cuda and host_given is not None:
        device_free = host_given  # cpu: the host's memory is the device's
    else:
        device_free = None if elsewhere else available_bytes()
    if not cuda:
        host_free = None
    elif host_given is not None or elsewhere:
        host_free = host_given
    else:
        host_free = available_bytes()
    header = (
        f"{model}: {shapes.params / 1e9:.2f} B parameters, {shapes.layers} layers; "
        f"{settings.examples} x {settings.max_length} tokens; {'cuda bf16' if cuda else 'cpu fp32'}"
        f"; {flops / 1e12:.2f} TFLOP/s ({how})"
    )
    if cuda and host_free is None:
        header += "\nhost memory not checked (pass --host-memory-gb for that machine's)"
    if auto_accum:
        settings = fitting_accumulator(shapes, settings, flops, device_free, host_free)
    dtype = "fp32" if settings.accum_bytes == 4 else "bf16"
    header += f"\ngradient sums: {settings.accum_stats} per weight, {dtype} " + (
        "in host memory" if settings.accum_on_host else "on the device"
    )
    stages = plan_run(shapes, settings, flops)
    return MachinePlan(header, stages, device_free, host_free)


def fitting_accumulator(
    s: Shapes, r: RunSettings, flops: float, device_free: int | None, host_free: int | None
) -> RunSettings:
    """r with the first accumulator whose gradient stage fits: fp32 on the device, bf16 on
    the device, fp32 in host memory (the order tacq.circuit.accumulators chooses in); r's own
    choice when none does (the check then says why)."""
    for accum_bytes, on_host in ((4, False), (2, False), (4, True)):
        trial = replace(r, accum_bytes=accum_bytes, accum_on_host=on_host)
        try:
            check_fits(plan_run(s, trial, flops)[:1], device_free, host_free)
        except TacqError:
            continue
        return trial
    return r


def _hms(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.2f} h"
