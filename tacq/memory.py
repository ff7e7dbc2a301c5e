"""How much memory a new model copy may take, so a step fails with a message, not a dead process.

TACQ_MEMORY_BUDGET_MB caps what tacq assumes is free (useful on shared machines and to test
the out-of-memory path); otherwise the OS's MemAvailable is used.
"""

from __future__ import annotations

import os

from torch import nn

from tacq.errors import TacqError

HEADROOM = 1.25  # a copy needs its bytes plus working space


def megabytes_setting(name: str) -> int | None:
    """Bytes from an environment setting in MB (None when unset); a clear error if not a number."""
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(float(value) * 2**20)
    except ValueError as e:
        raise TacqError(f"{name} must be a number (got {value!r}).") from e


def available_bytes() -> int | None:
    """Free memory in bytes: the budget setting, else MemAvailable (Linux), else None."""
    budget = megabytes_setting("TACQ_MEMORY_BUDGET_MB")
    if budget is not None:
        return budget
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def model_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def storages(model: nn.Module) -> dict[tuple[str, int], int]:
    """(device, address) -> bytes of every distinct storage behind the model's parameters
    and buffers (tied or shared tensors once)."""
    out = {}
    for t in [*model.parameters(), *model.buffers()]:
        st = t.untyped_storage()
        out[(str(t.device), st.data_ptr())] = st.nbytes()
    return out


def resident_bytes(model: nn.Module, base: nn.Module | None = None) -> int:
    """Bytes of the storages `model` holds that `base` does not: what a variant adds to
    memory (its packed codes, scales and kept weights; what it shares with base is free)."""
    shared = storages(base) if base is not None else {}
    return sum(n for key, n in storages(model).items() if key not in shared)


def packed_estimate(
    model: nn.Module,
    bits: int,
    ratio: float,
    group_size: int | None,
    rotation: str | None = None,
) -> int:
    """What a packed variant of `model` will hold in memory: codes, fp16 scale + uint8 zero
    per row or group, each kept weight's fp16 value and int32 index, and with `rotation`
    (a tacq.formats.orthogonal kind) each Linear's R (rotation_bytes). The saved file is smaller
    (b-bit zeros, per-row kept counts): tacq.formats.sizes.linear_bytes counts that."""
    from tacq.models import quantizable_linears

    total = 0
    for lin in quantizable_linears(model).values():
        out_f, in_f = lin.weight.shape
        groups = 1 if group_size is None else -(-in_f // group_size)
        total += out_f * (-(-in_f // 8) * bits + 3 * groups) + int(6 * ratio * out_f * in_f)
    return total + (rotation_bytes(model, rotation) if rotation else 0)


def rotation_bytes(model: nn.Module, kind: str) -> int:
    """Bytes of the rotations a rotated variant holds (tacq.formats.orthogonal.Rotation, fp32, drawn
    from the seed at load): "haar" keeps a dense (n, n) R, n signs and a 1 x 1 Hadamard per
    Linear of n inputs (n^2 floats: 520 MB on SmolLM2); "hadamard" n signs and an (a, a)
    mix per Linear, n = a * h, and one (h, h) Hadamard per distinct h (a cached tensor)."""
    from tacq.models import quantizable_linears

    floats, shared = 0, set()
    for lin in quantizable_linears(model).values():
        n = lin.weight.shape[1]
        if kind == "haar":
            floats += n * n + n + 1
        else:
            h = n & -n  # the largest power of two dividing n
            floats += n + (n // h) ** 2
            shared.add(h)
    return 4 * (floats + sum(h * h for h in shared))


def dense_linear_bytes(model: nn.Module) -> int:
    """Bytes of the quantizable Linears' weights as the model holds them (a peer's variant
    keeps dense copies of these)."""
    from tacq.models import quantizable_linears

    return sum(
        m.weight.numel() * m.weight.element_size() for m in quantizable_linears(model).values()
    )


def rss_bytes() -> int | None:
    """This process's resident set size (Linux /proc), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def check_room(nbytes: int, what: str, in_use: int = 0) -> None:
    """Raise TacqError when `nbytes` more (plus working space) would not fit in free memory."""
    free = available_bytes()
    need = int(nbytes * HEADROOM)
    if os.environ.get("TACQ_MEMORY_BUDGET_MB") and free is not None:
        free -= in_use
    if free is not None and need > free:
        raise TacqError(
            f"Not enough memory for {what}: it needs about {need / 2**20:,.0f} MB and "
            f"{max(free, 0) / 2**20:,.0f} MB are free. Delete a variant first."
        )
