"""The never-tuned tasks (assets/tasks/fresh/): the original model's exact match and answer
NLL on each split, so a task is only kept if fp can do it (exact match >= 0.5).

Why: a setting chosen on the bundled seven (the measured preset, the demo's pick) is a claim
about a user's task only if it also holds on tasks nothing was tuned on; those tasks must
first be ones the unquantized model solves, or every variant ties at zero. Each row records
the digest of the task file it measured, so an edited task shows as unmeasured.

    python bench/fresh.py          # a few minutes on a 2-core CPU

Writes bench/results/fresh.json.
"""

from __future__ import annotations

import hashlib
import time

from _common import no_options, stamp, write_result

MIN_FP_EM = 0.5


def file_digest(name: str) -> str:
    """sha256 of a fresh task's file: what a row was measured on."""
    from tacq.data.tasks import FRESH_DIR

    return hashlib.sha256((FRESH_DIR / f"{name}.jsonl").read_bytes()).hexdigest()[:16]


def main() -> None:
    no_options(__doc__)
    from tacq.data.reading import load_task
    from tacq.data.tasks import fresh_tasks
    from tacq.eval.evaluate import evaluate
    from tacq.models import load_model

    lm = load_model()
    rows = []
    for name in fresh_tasks():
        task, t = load_task(name), time.perf_counter()
        row = {"task": name, "digest": file_digest(name)}
        for split in ("dev", "heldout"):
            res, _ = evaluate(lm.model, lm.tokenizer, list(task.split(split)), task.style, name)
            row[split] = {
                "examples": len(task.split(split)),
                "exact_match": res.exact_match,
                "answer_nll": res.answer_nll,
            }
        row["seconds"] = time.perf_counter() - t
        row["fp_solves"] = (
            min(row["dev"]["exact_match"], row["heldout"]["exact_match"]) >= MIN_FP_EM
        )
        print(
            f"{name:10s} fp EM dev {row['dev']['exact_match']:.3f} held-out "
            f"{row['heldout']['exact_match']:.3f}  NLL {row['heldout']['answer_nll']:.3f}",
            flush=True,
        )
        rows.append(row)
    write_result("fresh", {"rows": stamp(rows), "min_fp_em": MIN_FP_EM})


if __name__ == "__main__":
    main()
