"""TaCQ: task-circuit quantization. Library entry points; see README for the CLI and app.

A program that runs torch work on threads other than the main one (as the app does) should
keep the main thread free of parallel torch ops (load the model on a thread that ends, as
app.main.off_main_thread does): OpenMP keeps a pool of workers per thread that ran one, and
a pool left on the main thread makes every other thread's GPTQ 1.4x slower
(bench/results/omp_wait.json). OpenMP's default wait policy then serves both one job alone
and a job beside a chat reply as well as sleeping threads (PASSIVE) do.
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
