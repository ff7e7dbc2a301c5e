"""Regenerate one task's core matched-bits table and time it: every method once, 2 and 3 bits.

Runs bench/quality.py (ours: fp, RTN g128, GPTQ per channel and g128, the cheaper saliency
scores and TaCQ at the peers' bits) and then bench/peers.py (AutoRound and HQQ by their own
packages) as two child processes, so each writes and merges its own result file exactly as
when run by hand; this script only records what it ran and how long each step took, in
bench/results/one_task.json. Needs the peer packages (bench/requirements-peers.txt); run it
with the interpreter that has them.

    python bench/one_task.py --task past_tense
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _common import ROOT, stamp, write_result

OURS = "fp,rtn_g128,gptq,gptq_g128,magnitude,msg,qal,tacq,tacq_p0.2,tacq_g128"
TARGET_MIN = 90.0  # issue 18: one task's core table in under 90 minutes on the 2-core CPU


def timed(cmd: list[str]) -> dict:
    """Run one bench step (its output goes to ours) and return what ran and its wall time."""
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    rc = subprocess.run([sys.executable, *cmd], cwd=ROOT / "bench").returncode
    return {
        "command": " ".join(["python", *cmd]),
        "rc": rc,
        "minutes": (time.perf_counter() - start) / 60,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", required=True)
    ap.add_argument("--methods", default=OURS, help="our methods (bench/quality.py names)")
    ap.add_argument("--iters", type=int, default=50, help="AutoRound tuning steps per block")
    args = ap.parse_args()
    steps = [
        timed(["quality.py", "--tasks", args.task, "--bits", "2,3", "--methods", args.methods]),
        timed(["peers.py", "--task", args.task, "--bits", "2,3", "--iters", str(args.iters)]),
    ]
    total = sum(s["minutes"] for s in steps)
    row = {"task": args.task, "steps": steps, "minutes": total, "target_minutes": TARGET_MIN}
    print(f"{args.task}: {total:.1f} min in all (target < {TARGET_MIN:.0f})")
    path = ROOT / "bench" / "results" / "one_task.json"
    saved = json.loads(path.read_text())["rows"] if path.exists() else []
    rows = [r for r in saved if r["task"] != args.task] + stamp([row])
    write_result("one_task", {"rows": sorted(rows, key=lambda r: r["task"])})
    if any(s["rc"] for s in steps):
        sys.exit(1)


if __name__ == "__main__":
    main()
