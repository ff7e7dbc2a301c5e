"""Is the demo's expected time honest? A first run with empty caches, expected vs actual.

Runs the one-click demo (quick, then full) on its default task in a fresh $TACQ_HOME (the
converted model is reused; every gradient and GPTQ cache starts empty), under the app's
thread setting (OpenMP's default), and records each stage's expected seconds (the first guess: the
development machine's stage times scaled by this machine's speed probe and the model's
size, tacq.study.demo.first_guess) against the measured ones. Target: every stage and the total
within 30 %. Then a second run of the same demo, whose expected times are the first run's
measured ones (what the app shows from then on).

First of all, the quick demo with both GPTQ baselines (per channel and g128) on empty
caches: the quick demo makes both only if that fits QUICK_LIMIT_S (3 minutes) on the
development machine's idle 2-core CPU, else g128 alone (tacq.study.demo.QUICK_GPTQ; a test
holds it to this run).

    python bench/demo_time.py

Writes bench/results/demo_time.json.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from _common import no_options, stamp, write_result


def main() -> None:
    no_options(__doc__)
    models = os.environ.get("TACQ_MODELS_DIR") or str(Path.home() / ".cache" / "tacq" / "models")
    os.environ["TACQ_MODELS_DIR"] = models
    os.environ["TACQ_HOME"] = tempfile.mkdtemp(prefix="tacq-demo-time-")

    from tacq.data.reading import load_task
    from tacq.data.tasks import DataConfig
    from tacq.models import load_model
    from tacq.study.demo import (
        DEMO_RECIPE,
        DEMO_TASK,
        FULL_EXAMPLES,
        GPTQ_BASELINES,
        QUICK_EXAMPLES,
        QUICK_LIMIT_S,
        plan_demo,
        run_demo,
        speed_probe,
    )
    from tacq.study.tables import gallery_right
    from tacq.study.workflow import Study

    lm = load_model()
    runs = []
    plan = [(True, QUICK_EXAMPLES, "both GPTQ baselines, empty caches", GPTQ_BASELINES)]
    for quick, n in ((True, QUICK_EXAMPLES), (False, FULL_EXAMPLES)):
        for attempt in ("first run, empty caches", "second run"):
            plan.append((quick, n, attempt, None))
    for quick, n, attempt, gptq in plan:
        if attempt.endswith("empty caches"):
            os.environ["TACQ_HOME"] = tempfile.mkdtemp(prefix="tacq-demo-time-")
        study = Study(lm, load_task(DEMO_TASK), DataConfig(max_examples=n))
        demo = plan_demo(study, quick=quick, gptq=gptq)
        for _ in run_demo(demo):
            pass
        stages = [
            {
                "stage": s.name,
                "expected_s": s.expected_s,
                "actual_s": s.elapsed_s,
                "off": s.expected_s / s.elapsed_s - 1,
            }
            for s in demo.stages
        ]
        run = {
            "mode": "quick" if quick else "full",
            "attempt": attempt,
            "task": DEMO_TASK,
            "recipe": DEMO_RECIPE,
            "variants": [v.name for v in demo.variants],
            "examples": n,
            "expected_s": demo.expected_s,
            "actual_s": demo.elapsed_s,
            "off": demo.expected_s / demo.elapsed_s - 1,
            "stages": stages,
            "gallery_right": gallery_right(demo.results),
            "heldout_em": {r.name: r.exact_match for r in demo.results},
        }
        print(
            f"{run['mode']} ({attempt}): expected {demo.expected_s:.0f} s, actual "
            f"{demo.elapsed_s:.0f} s ({100 * run['off']:+.0f} %)",
            flush=True,
        )
        for s in stages:
            print(f"  {s['stage']:<40} {s['expected_s']:7.1f} {s['actual_s']:7.1f}")
        print(f"  gallery right: {run['gallery_right']}; held-out EM {run['heldout_em']}")
        runs.append(run)
    write_result(
        "demo_time",
        {
            "probe_s": speed_probe(),
            "threads": os.environ.get("OMP_NUM_THREADS") or os.cpu_count(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "quick_limit_s": QUICK_LIMIT_S,
            "runs": stamp(runs),
        },
    )


if __name__ == "__main__":
    main()
