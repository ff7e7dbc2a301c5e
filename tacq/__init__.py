"""TaCQ: task-circuit quantization. Library entry points; see README for the CLI and app.

A program that runs torch work on several threads at once (as the app streams chat while
it quantizes) should set OMP_WAIT_POLICY=PASSIVE before torch loads, as launch.py does:
spinning OpenMP threads starve the other thread (GPTQ 1.5x slower beside a chat thread),
while one job at a time (the CLI) runs 1.4-1.8x faster with OpenMP's default spin
(bench/results/omp_wait.json).
"""

from __future__ import annotations

__version__ = "0.1.0"


def load_quantized(folder, device=None):
    """Load a packed TaCQ checkpoint as a transformers model (see tacq.export)."""
    from tacq.export import load_quantized as _load

    return _load(folder, device)


def __getattr__(name: str):
    """tacq.Recipe, imported when first asked for (import tacq stays light)."""
    if name == "Recipe":
        from tacq.recipe import Recipe

        return Recipe
    raise AttributeError(f"module 'tacq' has no attribute {name!r}")
