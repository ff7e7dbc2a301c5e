"""Which OpenMP wait policy to run under, measured: why launch.py sets PASSIVE and the CLI not.

Spinning threads answer the next parallel region fastest on an idle CPU but starve other
torch work in the same process (the app streams chat replies while it quantizes); sleeping
threads are polite but pay a wake-up on each of the many small ops of GPTQ's column loop
and of the per-sample gradient products. Each policy runs the same child on an idle CPU,
beside another torch process, and beside a chat-like decode thread in its own process:
GPTQ of one 1536x576 layer, and the per-sample |grad| accumulation of one SmolLM2-sized
decoder block (8 samples x 20 tokens). Writes bench/results/omp_wait.json.

    python bench/omp_wait.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time

from _common import no_options, write_result

CHILD = """
import os, threading, time, torch
from tacq.quant.gptq import GPTQConfig, gptq_matrix
from tacq.circuit.gradients import GradientConfig, _Accumulator
torch.manual_seed(0)
W = torch.randn(1536, 576) * 0.02
X = torch.randn(4000, 576)
H = 2 * X.T @ X / 4000
shapes = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
lins = {str(i): torch.nn.Linear(i_, o, bias=False) for i, (o, i_) in enumerate(shapes)}
acc = _Accumulator(lins, GradientConfig(accum_dtype="float32", accum_device="model"), ("abs",))
xs = {n: torch.randn(8, 20, m.in_features) for n, m in lins.items()}
gs = {n: torch.randn(8, 20, m.out_features) for n, m in lins.items()}
def grads():
    for n in lins:
        acc.add(n, xs[n], gs[n])
def median(fn, n):
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return sorted(ts)[n // 2]
stop = threading.Event()
def chat():  # one decode step after another: small matmuls, as the app's chat does
    w, x = torch.randn(576, 1536), torch.randn(1, 576)
    while not stop.is_set():
        torch.tanh(x @ w)
talker = threading.Thread(target=chat)
if os.environ.get("TACQ_BENCH_CHAT"):
    talker.start()
print(median(lambda: gptq_matrix(W, H, None, GPTQConfig(bits=2)), 3), median(grads, 9))
stop.set()
if talker.is_alive():
    talker.join()
"""

POLICIES = {  # name -> environment
    "spin (OpenMP default)": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "short spin (GOMP_SPINCOUNT=10000)": {"GOMP_SPINCOUNT": "10000"},
}


def _hog(stop_at: float) -> None:
    """Another torch job on the same CPU (e.g. a chat reply while GPTQ runs)."""
    import torch

    a = torch.randn(1024, 1024)
    while time.time() < stop_at:
        a = torch.tanh(a @ a.T / 1024)


def _child(root: str, extra: dict[str, str]) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=root)
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "TACQ_BENCH_CHAT"):
        env.pop(var, None)
    env.update(extra)
    res = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    gptq_s, grads_s = map(float, res.stdout.split()[-2:])
    return gptq_s, grads_s


def main() -> None:
    no_options(__doc__)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out: dict[str, dict[str, float]] = {}
    for load in ("idle", "beside another job", "beside a chat thread"):
        hog = None
        if load == "beside another job":
            hog = mp.Process(target=_hog, args=(time.time() + 900,), daemon=True)
            hog.start()
        try:
            for name, extra in POLICIES.items():
                chat = {"TACQ_BENCH_CHAT": "1"} if load == "beside a chat thread" else {}
                gptq_s, grads_s = _child(root, extra | chat)
                out[f"{name}, {load}"] = {"gptq_1536x576_s": gptq_s, "grads_block_s": grads_s}
                print(
                    f"{name:<34} {load:<19} gptq 1536x576 2-bit {gptq_s:6.2f} s   "
                    f"grad products of one block {grads_s * 1000:6.1f} ms"
                )
        finally:
            if hog is not None:
                hog.terminate()
    write_result("omp_wait", {"seconds": out})
    print("the app (launch.py) runs PASSIVE; the CLI and benchmarks keep OpenMP's default")


if __name__ == "__main__":
    main()
