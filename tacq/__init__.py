"""TaCQ: task-circuit quantization. Library entry points; see README for the CLI and app.

A program that runs torch work on several threads at once (as the app streams chat while
it quantizes) should set OMP_WAIT_POLICY=PASSIVE before torch loads, as launch.py does:
spinning OpenMP threads starve the other thread (GPTQ 1.5x slower beside a chat thread),
while one job at a time (the CLI) runs 1.4-1.8x faster with OpenMP's default spin
(bench/results/omp_wait.json).
"""

from __future__ import annotations

__version__ = "0.1.0"


# The public API, each name imported when first asked for (import tacq stays light: no
# torch or transformers until one is used). name -> the module that defines it.
_API = {
    "Study": "tacq.study.workflow",
    "Recipe": "tacq.quant.recipe",
    "Selection": "tacq.circuit.select",
    "load_model": "tacq.models",
    "load_task": "tacq.data.reading",
    "read_examples": "tacq.data.reading",
    "save_packed": "tacq.formats.export",
    "load_quantized": "tacq.formats.export",
    "TacqError": "tacq.errors",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'tacq' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
