"""Is the TaCQ circuit a task circuit? The damage-only causal test on every bundled task.

For each task: the 2-bit TaCQ circuit at p = 0.35 % is damaged (rounded to its rows' 2-bit
grid, or zeroed) with everything else at full precision, next to controls of the same
size (random with the same count per Linear over 3 seeds, random anywhere, largest |W|);
answer NLL and exact match on the task's first --scored held-out examples, answer NLL on a
control task, generic perplexity (tacq.circuit.causal). The wall time of the test alone (ranking
and measuring; gradients come from the cache) is recorded against the 2-minute target,
and the median time to read the circuit per query head, KV head and MLP neuron from the
cached ranking against the 1-second target.

    python bench/causal.py                                  # every bundled task, round
    python bench/causal.py --tasks antonyms --damage zero

The converse (only the circuit kept at full precision, everything else quantized, versus
random-kept and magnitude-kept) is bench/quality.py with methods random,magnitude,tacq.
Writes bench/results/causal.json (merged by task and damage).
"""

from __future__ import annotations

import argparse
import json
import time

from _common import ROOT, stamp, write_result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", help="comma list (default: every bundled task)")
    ap.add_argument("--damage", default="round", choices=("round", "zero"))
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--ratio", type=float, default=0.0035)
    ap.add_argument("--scored", type=int, default=32, help="held-out examples, task and control")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()

    from tacq.circuit.causal import CausalConfig, causal_test
    from tacq.circuit.select import Selection
    from tacq.data.reading import load_task
    from tacq.data.tasks import list_tasks
    from tacq.models import load_model
    from tacq.study.workflow import Study

    lm = load_model()
    cfg = CausalConfig(args.damage, args.seeds, args.scored, args.scored)
    rows = []
    for name in args.tasks.split(",") if args.tasks else list(list_tasks()):
        study = Study(lm, load_task(name))
        study.collect()
        sel = Selection("tacq", args.bits, args.ratio)
        t = time.perf_counter()
        res = causal_test(study, sel, None, cfg)  # control: the first other bundled task
        secs = time.perf_counter() - t
        anatomy_ms = {}  # heads and neurons of the whole model from the cached ranking
        for unit in ("query", "kv", "neurons"):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                study.anatomy(sel, unit)
                times.append(1000 * (time.perf_counter() - t0))
            anatomy_ms[unit] = sorted(times)[1]
        print(res.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"{name}: {res.summary()} ({secs:.0f} s)", flush=True)
        rows.append(
            {
                "task": name,
                "control": res.control_task,
                "damage": args.damage,
                "bits": args.bits,
                "ratio": args.ratio,
                "scored": args.scored,
                "seeds": args.seeds,
                "n_damaged": res.n_damaged,
                "seconds": secs,
                "anatomy_ms": anatomy_ms,
                "table": res.table.to_dict("records"),
            }
        )
    stamp(rows)
    path = ROOT / "bench" / "results" / "causal.json"
    saved = json.loads(path.read_text())["rows"] if path.exists() else []
    key = lambda r: (r["task"], r["damage"])  # noqa: E731
    done = {key(r) for r in rows}
    merged = sorted([r for r in saved if key(r) not in done] + rows, key=key)
    write_result("causal", {"rows": merged})


if __name__ == "__main__":
    main()
