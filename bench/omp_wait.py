"""Why tacq sets OMP_WAIT_POLICY=PASSIVE: GPTQ of one 1536x576 layer with a CPU hog beside it.

Runs the same child timing twice (OpenMP's default vs PASSIVE wait policy) while another
torch process does matmuls, as a chat reply or a second job would. Writes bench/results/omp_wait.json.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time

from _common import write_result

CHILD = """
import time, torch
from tacq.gptq import GPTQConfig, gptq_matrix
torch.manual_seed(0)
W = torch.randn(1536, 576) * 0.02
X = torch.randn(4000, 576)
H = 2 * X.T @ X / 4000
gptq_matrix(W, H, None, GPTQConfig(bits=2))
ts = []
for _ in range(3):
    t = time.perf_counter(); gptq_matrix(W, H, None, GPTQConfig(bits=2)); ts.append(time.perf_counter() - t)
print(sorted(ts)[1])
"""


def _hog(stop_at: float) -> None:
    """Another torch job on the same CPU (e.g. a chat reply while GPTQ runs)."""
    import torch

    a = torch.randn(1024, 1024)
    while time.time() < stop_at:
        a = torch.tanh(a @ a.T / 1024)


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hog = mp.Process(target=_hog, args=(time.time() + 600,), daemon=True)
    hog.start()
    out = {}
    try:
        for policy in ("default", "PASSIVE"):
            env = dict(os.environ, PYTHONPATH=root)
            env.pop("OMP_WAIT_POLICY", None)
            if policy != "default":
                env["OMP_WAIT_POLICY"] = policy
            res = subprocess.run(
                [sys.executable, "-c", CHILD],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            out[policy] = float(res.stdout.strip().splitlines()[-1])
            print(
                f"OMP_WAIT_POLICY={policy:<8} gptq 1536x576 2-bit: {out[policy]:6.2f} s (median of 3)"
            )
    finally:
        hog.terminate()
    ratio = out["default"] / out["PASSIVE"]
    print(f"passive is x{ratio:.1f} faster with another torch job running")
    write_result("omp_wait", {"seconds": out, "ratio_default_over_passive": ratio})


if __name__ == "__main__":
    main()
