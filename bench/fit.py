"""Auto-fit on each bundled task: the smallest variant keeping 90 % of fp's dev exact match.

For each task, `tacq.study.autofit.fit` as `python -m tacq fit --task NAME --keep 0.9` runs it:
the measured preset at 2, 3 and 4 bits, then 0.20 / 0.35 / 0.50 % kept and scales per 128
inputs at 2 and 3 bits, in increasing honest bits per weight, each scored on the task's
dev split; higher bit widths are skipped once a lower one keeps the task; the choice is
scored once on held-out. Caches start cold (an empty cache folder per task) unless
--warm, so the wall time is what a user's first search costs; the target is under 15
minutes for SmolLM2 on a 2-core CPU.

    python bench/fit.py                          # every bundled task (hours on a CPU)
    python bench/fit.py --tasks records,dates

Writes bench/results/fit.json (rows merged by task).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from _common import ROOT, stamp, write_result

KEEP = 0.9
TARGET_MIN = 15


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", help="comma list (default: every bundled task)")
    ap.add_argument("--keep", type=float, default=KEEP)
    ap.add_argument("--warm", action="store_true", help="use the usual caches (not timed cold)")
    args = ap.parse_args()

    from tacq.data.reading import load_task
    from tacq.data.tasks import list_tasks
    from tacq.models import load_model
    from tacq.progress import line_progress
    from tacq.study.autofit import fit
    from tacq.study.demo import speed_probe
    from tacq.study.workflow import Study

    lm = load_model()
    tasks = args.tasks.split(",") if args.tasks else list(list_tasks())
    rows, home_before = [], os.environ.get("TACQ_HOME")
    for name in tasks:
        with tempfile.TemporaryDirectory() as home:
            if not args.warm:
                os.environ["TACQ_HOME"] = home  # gradients, references, scales: all cold
            t0 = time.perf_counter()
            result = fit(Study(lm, load_task(name)), args.keep, progress=line_progress(name))
            wall = time.perf_counter() - t0
            if home_before is None:
                os.environ.pop("TACQ_HOME", None)
            else:
                os.environ["TACQ_HOME"] = home_before
        chosen = result.chosen
        row = {
            "task": name,
            "caches": "warm" if args.warm else "cold",
            "wall_s": wall,
            "meets_time_target": wall <= TARGET_MIN * 60,
            # how fast this machine ran GPTQ then (tacq.study.demo.speed_probe; the development
            # machine: REF_PROBE_S): wall times on a slower one are not the same promise
            "speed_probe_s": speed_probe(),
            "chosen_bits": chosen.recipe.bits if chosen else None,
            "chosen_bpw": chosen.bpw_honest if chosen else None,
            **result.record(),
        }
        print(json.dumps({k: v for k, v in row.items() if k != "points"}), flush=True)
        print(result.table().to_string(index=False), flush=True)
        rows.append(row)
    path = ROOT / "bench" / "results" / "fit.json"
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    done = {r["task"] for r in rows}
    merged = [r for r in old if r["task"] not in done] + stamp(rows)
    write_result("fit", {"rows": merged, "keep": args.keep, "target_min": TARGET_MIN})


if __name__ == "__main__":
    main()
