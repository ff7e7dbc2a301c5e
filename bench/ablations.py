"""Where TaCQ misses a target: does the paper's knobs change it? 2-bit, held-out NLL.

For each task, TaCQ and MSG at p = 0.35 % under: the default (32 examples, loss on all
tokens, as the official code), loss on the answer tokens only, and all calibration examples
(~64). GPTQ at 2 bits with the same calibration examples gives the gap-closed baseline.

    python bench/ablations.py --tasks capitals,antonyms
Writes bench/results/ablations.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

from _common import stamp, write_result

from tacq.circuit.select import DEFAULT_RATIO, Selection
from tacq.quant.recipe import Recipe

CONFIGS = {
    "default (32 examples, all tokens)": {"examples": 32, "answer_only": False},
    "answer-only loss": {"examples": 32, "answer_only": True},
    "all calibration examples": {"examples": 64, "answer_only": False},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="capitals,antonyms")
    ap.add_argument("--methods", default="tacq,msg")
    ap.add_argument(
        "--sweep",
        default="antonyms:3:0.0035,0.01,0.02",
        help="task:bits:ratios for a TaCQ outlier-ratio sweep ('' to skip)",
    )
    args = ap.parse_args()

    from tacq.circuit.gradients import GradientConfig
    from tacq.data.reading import load_task
    from tacq.data.tasks import DataConfig
    from tacq.eval.evaluate import evaluate
    from tacq.models import load_model
    from tacq.study.workflow import Study

    lm = load_model()
    rows = []
    for task_name in args.tasks.split(","):
        task = load_task(task_name)
        held = list(task.heldout)
        fp, lp = evaluate(lm.model, lm.tokenizer, held, task.style, "fp")
        for label, c in CONFIGS.items():
            study = Study(
                lm,
                task,
                DataConfig(max_examples=c["examples"]),
                GradientConfig(answer_only=c["answer_only"]),
            )
            study.collect()
            res = {}
            for m in ["gptq", *args.methods.split(",")]:
                t = time.perf_counter()
                sel = Selection(
                    m if m != "gptq" else "tacq", 2, 0.0 if m == "gptq" else DEFAULT_RATIO
                )
                v = study.quantize(Recipe.of(sel))
                r, _ = evaluate(v.model, lm.tokenizer, held, task.style, v.name, fp_logprobs=lp)
                res[m] = r
                print(
                    f"{task_name:<9} {label:<34} {m:<5} NLL {r.answer_nll:6.3f} EM "
                    f"{r.exact_match:.3f} ({time.perf_counter() - t:.0f} s)",
                    flush=True,
                )
                del v
            g = res["gptq"].answer_nll
            for m, r in res.items():
                rows.append(
                    {
                        "task": task_name,
                        "config": label,
                        "method": m,
                        "calib_examples": len(study.calib_examples),
                        "answer_nll": r.answer_nll,
                        "exact_match": r.exact_match,
                        "kl_to_fp": r.kl_to_fp,
                        "fp_nll": fp.answer_nll,
                        "gap_closed": (g - r.answer_nll) / (g - fp.answer_nll),
                    }
                )
    sweep = []
    if args.sweep:
        task_name, bits, ratios = args.sweep.split(":")
        task = load_task(task_name)
        held = list(task.heldout)
        fp, lp = evaluate(lm.model, lm.tokenizer, held, task.style, "fp")
        study = Study(lm, task)
        study.collect()
        for p in [0.0, *map(float, ratios.split(","))]:
            v = study.quantize(Recipe.of(Selection("tacq", int(bits), p)))
            r, _ = evaluate(v.model, lm.tokenizer, held, task.style, v.name, fp_logprobs=lp)
            sweep.append(
                {
                    "task": task_name,
                    "bits": int(bits),
                    "ratio": p,
                    "bpw": v.size.bpw_paper,
                    "size_mb": v.size.total_bytes / 2**20,
                    "answer_nll": r.answer_nll,
                    "exact_match": r.exact_match,
                    "fp_nll": fp.answer_nll,
                }
            )
            print(
                f"sweep {task_name} {bits}-bit p={p:.4f} BPW {v.size.bpw_paper:.3f} NLL "
                f"{r.answer_nll:.3f} (fp {fp.answer_nll:.3f})",
                flush=True,
            )
            del v
    print("| task | config | method | examples | answer NLL | exact match | gap closed |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['task']} | {r['config']} | {r['method']} | {r['calib_examples']} | "
            f"{r['answer_nll']:.3f} | {r['exact_match']:.3f} | {r['gap_closed']:.0%} |"
        )
    print("\n| task | bits | ratio | BPW | answer NLL | vs fp | exact match |")
    print("|---|---|---|---|---|---|---|")
    for r in sweep:
        print(
            f"| {r['task']} | {r['bits']} | {100 * r['ratio']:.2f}% | {r['bpw']:.3f} | "
            f"{r['answer_nll']:.3f} | {r['answer_nll'] / r['fp_nll'] - 1:+.0%} | "
            f"{r['exact_match']:.3f} |"
        )
    rows, sweep = stamp(rows), stamp(sweep)
    write_result("ablations", {"bits": 2, "ratio": 0.0035, "rows": rows, "sweep": sweep})


if __name__ == "__main__":
    main()
