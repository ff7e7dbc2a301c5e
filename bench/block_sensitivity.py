"""Where a bit width loses a task: each decoder block at the next bit width, the rest not.

For one task, TaCQ's variant (rotated Hadamard basis, damping 0.1, 0.35 % kept, one scale
per row) is made at `bits` and at `bits + 1`. Then, block by block: every block at `bits`
but this one at `bits + 1` (what upgrading it buys), and every block at `bits + 1` but this
one at `bits` (what it costs alone). If a few blocks held most of the loss, giving them the
extra bit would be a cheap lever (a per-block bit width); if it is spread evenly, a wider
format everywhere (groups) costs the same bits for the same gain. Scored on the task's dev
split plus the calibration items past the first 32 (never calibration for the variants,
never held-out), so the diagnosis looks at no held-out example. Also per block: the summed
TaCQ score and the summed QAL score at both bit widths (what the saliency would predict).

    python bench/block_sensitivity.py --task capitals --bits 3
"""

from __future__ import annotations

import argparse
import copy
import re

from _common import stamp, write_result

ROTATION = "hadamard"
DAMP = 0.1
RATIO = 0.0035


def block_of(name: str) -> int:
    return int(re.search(r"layers\.(\d+)\.", name).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="capitals")
    ap.add_argument("--bits", type=int, default=3, choices=(2, 3))
    args = ap.parse_args()

    from tacq.circuit.select import Selection
    from tacq.data.reading import load_task
    from tacq.data.tasks import DataConfig
    from tacq.eval.evaluate import evaluate
    from tacq.formats.grid import GPTQConfig
    from tacq.models import load_model
    from tacq.quant.rotation import quantize_rotated
    from tacq.study.workflow import Study

    lm = load_model()
    task = load_task(args.task)
    study = Study(lm, task, DataConfig(max_examples=32))
    study.collect()
    examples = list(task.dev) + list(task.calib[32:])
    weights, score_sums = {}, {}
    for bits in (args.bits, args.bits + 1):
        sel = Selection("tacq", bits, RATIO)
        masks = study.ranking(sel).masks(RATIO)
        cfg = GPTQConfig(bits=bits, damp=DAMP)
        res = quantize_rotated(
            lm.model, study.batches(answer_only=False), cfg, masks, kind=ROTATION
        )
        weights[bits] = {n: lq.dequantize() for n, lq in res.layers.items()}
        for metric in ("tacq", "qal"):
            scores = study.scores(Selection(metric, bits, RATIO))
            score_sums[f"{metric}_{bits}bit"] = {n: float(s.sum()) for n, s in scores.items()}

    model = copy.deepcopy(lm.model)

    def score(bits_of) -> dict:
        for name in weights[args.bits]:
            lin = model.get_submodule(name)
            lin.weight.data = weights[bits_of(name)][name].to(lin.weight.dtype)
        r, _ = evaluate(model, lm.tokenizer, examples, task.style, "blocks")
        return {"answer_nll": r.answer_nll, "exact_match": r.exact_match}

    low, high = args.bits, args.bits + 1
    fp, _ = evaluate(lm.model, lm.tokenizer, examples, task.style, "fp")
    result = {
        "task": args.task,
        "bits": low,
        "examples": len(examples),
        "variant": f"tacq {RATIO:.2%} damp {DAMP} rotated ({ROTATION}), per channel",
        "fp": {"answer_nll": fp.answer_nll, "exact_match": fp.exact_match},
        "all_low": score(lambda n: low),
        "all_high": score(lambda n: high),
        "blocks": [],
    }
    for i in range(1 + max(block_of(n) for n in weights[low])):
        row = {
            "block": i,
            "only_this_high": score(lambda n, i=i: high if block_of(n) == i else low),
            "only_this_low": score(lambda n, i=i: low if block_of(n) == i else high),
        }
        for key, sums in score_sums.items():
            row[key] = sum(v for n, v in sums.items() if block_of(n) == i)
        result["blocks"].append(row)
        print(
            f"block {i:2d}: only it at {high} bits NLL {row['only_this_high']['answer_nll']:.3f}, "
            f"only it at {low} bits {row['only_this_low']['answer_nll']:.3f}",
            flush=True,
        )
    stamp([result])
    write_result("block_sensitivity", {"runs": [result]})
    gap = result["all_low"]["answer_nll"] - result["all_high"]["answer_nll"]
    best = min(result["blocks"], key=lambda b: b["only_this_high"]["answer_nll"])
    print(
        f"all {low}-bit {result['all_low']['answer_nll']:.3f}, all {high}-bit "
        f"{result['all_high']['answer_nll']:.3f}; the best single upgrade (block {best['block']}) "
        f"closes {(result['all_low']['answer_nll'] - best['only_this_high']['answer_nll']) / gap:.0%}"
    )


if __name__ == "__main__":
    main()
