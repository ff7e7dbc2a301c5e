"""TaCQ: task-circuit quantization. Library entry points; see README for the CLI and app."""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting starve each other when anything else runs on the
# CPU (a UI thread, a second job): GPTQ's many small ops then ran 18x slower here
# (bench/results/omp_wait.json). Passive waiting must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def load_quantized(folder, device=None):
    """Load a packed TaCQ checkpoint as a transformers model (see tacq.export)."""
    from tacq.export import load_quantized as _load

    return _load(folder, device)
