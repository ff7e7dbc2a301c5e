"""What an exact-match miss is made of: the wrong answer, or the right answer with more on
its line.

Why: at 3 bits on next_number, AutoRound+generic keeps more exact match than TaCQ's dev pick
(0.46 against 0.29) although TaCQ's held-out answer NLL is lower, and on the examples only
AutoRound gets right TaCQ gives the answer tokens about the same probability. Exact match
reads the whole first line of a completion, so a model that names the right number and then
goes on with the sequence ("40, 43, 46") misses. This bench quantizes the named recipes,
generates greedy answers on the held-out split as bench/quality.py does, and sorts each miss
into "right answer, line goes on" (the line starts with the answer) or "another answer".

    python bench/em_misses.py --task next_number --bits 3 --methods fp,tacq_g256_p0.1_d0.1_roth

Writes bench/results/em_misses.json (merged by task, bits and method).
"""

from __future__ import annotations

import argparse
import json
import re

from _common import ROOT, stamp, write_result


def miss_kinds(rows: list[dict]) -> dict:
    """Counts of an EvalResult's rows: right, the right answer then more on its line, and
    another answer (completion style: the first line is what exact match reads)."""
    from tacq.eval.evaluate import normalize

    def answer_first(r: dict) -> bool:
        """'40, 43' and '40. 43' start with the answer '40'; '400' and '40.5' do not, nor
        '40' alone on a miss (the prediction is stored stripped: its raw first line was
        empty, no answer)."""
        line, answer = normalize(r["prediction"].split("\n", 1)[0]), normalize(r["answer"])
        more = re.match(rf"{re.escape(answer)}(?:[\s,;:]|[.!?](?:\s|$))", line)
        return line != answer and more is not None

    right = sum(r["correct"] for r in rows)
    goes_on = sum(not r["correct"] and answer_first(r) for r in rows)
    return {
        "right": right,
        "answer_then_more": goes_on,
        "other_answer": len(rows) - right - goes_on,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="next_number")
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--methods", default="fp,tacq_g256_p0.1_d0.1_roth")
    ap.add_argument("--examples", type=int, default=32, help="calibration examples")
    args = ap.parse_args()

    from tacq.data.reading import load_task
    from tacq.data.tasks import DataConfig
    from tacq.eval.evaluate import evaluate
    from tacq.formats.packed import dense_copy
    from tacq.models import load_model
    from tacq.quant.recipe import Recipe
    from tacq.study.workflow import Study

    lm = load_model()
    task = load_task(args.task)
    study = Study(lm, task, DataConfig(max_examples=args.examples))
    held = list(task.heldout)
    rows = []
    for m in args.methods.split(","):
        if m == "fp":
            model = lm.model
        else:
            study.collect()
            model = dense_copy(study.quantize(Recipe.from_key(m, args.bits)).model)
        r, _ = evaluate(model, lm.tokenizer, held, task.style, m)
        kinds = miss_kinds(r.rows)
        rows.append(
            {
                "task": args.task,
                "bits": args.bits,
                "method": m,
                "heldout_examples": len(held),
                "exact_match": r.exact_match,
                "answer_nll": r.answer_nll,
                **kinds,
                "predictions": [x["prediction"] for x in r.rows],
            }
        )
        print(f"{args.task} {args.bits}-bit {m}: {kinds}", flush=True)
    path = ROOT / "bench" / "results" / "em_misses.json"
    saved = json.loads(path.read_text())["rows"] if path.exists() else []
    key = lambda r: (r["task"], r["bits"], r["method"])  # noqa: E731
    done = {key(r) for r in rows}
    merged = sorted([r for r in saved if key(r) not in done] + stamp(rows), key=key)
    write_result("em_misses", {"rows": merged})


if __name__ == "__main__":
    main()
