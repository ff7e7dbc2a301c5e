"""Which OpenMP wait policy to run under, and on which thread, measured.

Spinning threads answer the next parallel region fastest on an idle CPU; sleeping threads
(PASSIVE) pay a wake-up on each of the many small ops of GPTQ's column loop and of the
per-sample gradient products. The app runs jobs on worker threads, and OpenMP keeps a pool
of workers per thread that ran a parallel op: a pool left on the main thread (the model
loaded there at start-up) makes a job thread as slow as PASSIVE even under spinning.
Each policy x thread runs the same child on an idle CPU, beside another torch process, and
beside a chat-like decode thread in its own process (whose step time is recorded): GPTQ of
one 1536x576 layer, and the per-sample |grad| accumulation of one SmolLM2-sized decoder
block (8 samples x 20 tokens). Writes bench/results/omp_wait.json.

    python bench/omp_wait.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from itertools import product

from _common import no_options, write_result

CHILD = """
import os, threading, time, torch
from tacq.quant.gptq import GPTQConfig, gptq_matrix
from tacq.circuit.gradients import GradientConfig, _Accumulator
def setup():  # builds tensors: parallel ops, so it runs on the thread under test
    global W, H, lins, acc, xs, gs
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
steps = [0]
def chat():  # one decode step after another: small matmuls, as the app's chat does
    w, x = torch.randn(576, 1536), torch.randn(1, 576)
    while not stop.is_set():
        torch.tanh(x @ w)
        steps[0] += 1
where = os.environ.get("TACQ_BENCH_WHERE", "main")
if where == "job thread, start-up on main":  # the model load left a pool on the main thread
    torch.randn(2000, 2000).mul_(2).sum()
talker = threading.Thread(target=chat)
if os.environ.get("TACQ_BENCH_CHAT"):
    talker.start()
out = []
def job():
    setup()
    t = time.perf_counter(); n0 = steps[0]
    out.extend([median(lambda: gptq_matrix(W, H, None, GPTQConfig(bits=2)), 3), median(grads, 9)])
    out.append((time.perf_counter() - t) / max(steps[0] - n0, 1))
if where == "main":
    job()
else:  # as the app runs a job: on a worker thread
    th = threading.Thread(target=job); th.start(); th.join()
print(*out)
stop.set()
if talker.is_alive():
    talker.join()
"""

WHERE = (  # which thread runs the timed job
    "main",  # as the CLI and benchmarks do
    "job thread, start-up on main",  # as the app did: model loaded on the main thread
    "job thread, start-up off main",  # as the app does now (app.main.off_main_thread)
)
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


def _child(root: str, extra: dict[str, str]) -> tuple[float, float, float]:
    env = dict(os.environ, PYTHONPATH=root)
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "TACQ_BENCH_CHAT", "TACQ_BENCH_WHERE"):
        env.pop(var, None)
    env.update(extra)
    res = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    gptq_s, grads_s, chat_step_s = map(float, res.stdout.split()[-3:])
    return gptq_s, grads_s, chat_step_s


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
            for (name, extra), where in product(POLICIES.items(), WHERE):
                chat = {"TACQ_BENCH_CHAT": "1"} if load == "beside a chat thread" else {}
                gptq_s, grads_s, step_s = _child(root, extra | chat | {"TACQ_BENCH_WHERE": where})
                key = f"{name}, {load}" if where == "main" else f"{name}, {where}, {load}"
                out[key] = {"gptq_1536x576_s": gptq_s, "grads_block_s": grads_s}
                if chat:
                    out[key]["chat_step_ms"] = step_s * 1000
                print(
                    f"{key:<75} gptq 1536x576 2-bit {gptq_s:6.2f} s   grad products of one "
                    f"block {grads_s * 1000:6.1f} ms"
                    + (f"   chat step {step_s * 1e3:.2f} ms" if chat else "")
                )
        finally:
            if hog is not None:
                hog.terminate()
    write_result("omp_wait", {"seconds": out})
    print(
        "the app runs jobs on worker threads with nothing parallel left on the main thread "
        "(app.main.off_main_thread) under OpenMP's default policy, as the CLI does"
    )


if __name__ == "__main__":
    main()
