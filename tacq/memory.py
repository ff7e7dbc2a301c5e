"""How much memory a new model copy may take, so a step fails with a message, not a dead process.

TACQ_MEMORY_BUDGET_MB caps what tacq assumes is free (useful on shared machines and to test
the out-of-memory path); otherwise the OS's MemAvailable is used.
"""

from __future__ import annotations

import os

from torch import nn

from tacq.errors import TacqError

HEADROOM = 1.25  # a copy needs its bytes plus working space


def available_bytes() -> int | None:
    """Free memory in bytes: the budget setting, else MemAvailable (Linux), else None."""
    budget = os.environ.get("TACQ_MEMORY_BUDGET_MB")
    if budget:
        try:
            return int(float(budget) * 2**20)
        except ValueError as e:
            raise TacqError(f"TACQ_MEMORY_BUDGET_MB must be a number (got {budget!r}).") from e
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


def check_room_for_copy(model: nn.Module, what: str, in_use: int = 0) -> None:
    """Raise TacqError when another copy of `model` would not fit in free memory.

    in_use: bytes already held by earlier copies, counted against a budget setting.
    """
    free = available_bytes()
    need = int(model_bytes(model) * HEADROOM)
    if os.environ.get("TACQ_MEMORY_BUDGET_MB") and free is not None:
        free -= in_use
    if free is not None and need > free:
        raise TacqError(
            f"Not enough memory for {what}: it needs about {need / 2**20:,.0f} MB and "
            f"{max(free, 0) / 2**20:,.0f} MB are free. Delete a variant first."
        )
