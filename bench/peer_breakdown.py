"""Where a tuned peer's model breaks: is its rounding off its own grid, one Linear, or a block?

AutoRound tuned at 3 bits g128 gives generic perplexity ~1e17-1e19 on SmolLM2 while its own
RTN mode at the same settings gives ~150 and no Linear's Frobenius error looks far off. This
script reruns that peer by its own package (the calibration texts bench/peers.py gives it),
then looks at what it produced:

1. **our reading**: the peer's own model and our copy of its weights score the same
   generic perplexity, and every group holds at most 2**b distinct values (its own grid);
2. **hidden states**: per decoder layer, ||h_peer - h_fp|| / ||h_fp|| on held-out prompts,
   beside the same for AutoRound's own RTN mode at the same settings;
3. **swaps**: the block that adds the most drift, alone in the fp model, removed from the
   peer's model, and each of its Linears alone: is one weight matrix the break?

    python bench/peer_breakdown.py --task antonyms --bits 3 --iters 50

Writes bench/results/peer_breakdown.json (merged by task, peer, bits, group, iters and
calibration).
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from _common import ROOT, stamp, write_result

from tacq.data.calibration import generic_fit_texts

PPL_CHUNKS = 2  # 256-token chunks of the generic text perplexity reads


def grid_check(weights: dict, originals: dict, group: int) -> dict:
    """Per Linear: most distinct values in one group (groups run along each row; a row whose
    length is not a multiple of the group ends in a shorter one), and the worst row's error."""
    out = {}
    for name, w in weights.items():
        levels = 0
        for start in range(0, w.shape[1], group):
            s = w[:, start : start + group].sort(dim=1).values
            levels = max(levels, int(((s[:, 1:] != s[:, :-1]).sum(1) + 1).max()))
        d = w - originals[name]
        row_err = d.norm(dim=1) / originals[name].norm(dim=1).clamp(min=1e-12)
        out[name] = {"max_levels": levels, "worst_row_err": float(row_err.max())}
    return out


@torch.no_grad()
def layer_drift(fp, peer, tokenizer, prompts: list[str]) -> list[float]:
    """Per decoder layer output: mean over prompts of ||h_peer - h_fp|| / ||h_fp||."""
    drift = None
    for p in prompts:
        ids = tokenizer(p, return_tensors="pt")["input_ids"]
        a = fp(ids, output_hidden_states=True).hidden_states[1:]
        b = peer(ids, output_hidden_states=True).hidden_states[1:]
        d = [float((y - x).norm() / x.norm()) for x, y in zip(a, b)]
        drift = d if drift is None else [s + v for s, v in zip(drift, d)]
    return [s / len(prompts) for s in drift]


def mixed_ppl(model, tokenizer, text: str, weights: dict, names: list[str]) -> float:
    """Generic perplexity of `model` with `weights` put into `names` only (then restored)."""
    from tacq.eval.evaluate import perplexity

    mods = dict(model.named_modules())
    saved = {n: mods[n].weight.data.clone() for n in names}
    try:
        for n in names:
            mods[n].weight.data.copy_(weights[n])
        return perplexity(model, tokenizer, text, max_chunks=PPL_CHUNKS)
    finally:
        for n in names:
            mods[n].weight.data.copy_(saved[n])


def run_peer(lm, args, texts: list[str], names: list[str], iters: int):
    from tacq.peers.registry import PEERS

    t = time.perf_counter()
    run = PEERS[args.peer][2](
        copy.deepcopy(lm.model),
        names,
        args.bits,
        args.group,
        tokenizer=lm.tokenizer,
        texts=texts,
        iters=iters,
        seed=0,
    )
    return run, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="antonyms")
    ap.add_argument("--peer", default="autoround")
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument(
        "--generic-calibration",
        action="store_true",
        help="also calibrate on the generic text past the part perplexity reads (a test of "
        "whether the break comes from calibrating on a few hundred task tokens)",
    )
    args = ap.parse_args()

    from tacq.data.reading import load_task
    from tacq.data.tasks import DataConfig, generic_text
    from tacq.eval.evaluate import evaluate, perplexity
    from tacq.models import load_model, quantizable_linears
    from tacq.peers.registry import dequantized_model, package_version
    from tacq.study.workflow import Study

    lm = load_model()
    task = load_task(args.task)
    study = Study(lm, task, DataConfig(max_examples=args.examples))
    texts = [e.prompt + e.answer for e in study.calib_examples]
    text = generic_text()
    if args.generic_calibration:  # perplexity reads only the first PPL_CHUNKS chunks
        texts += generic_fit_texts(lm.tokenizer, PPL_CHUNKS * 256)
    names = list(quantizable_linears(lm.model))
    held = list(task.heldout)
    _, fp_lp = evaluate(lm.model, lm.tokenizer, held, task.style, "fp")
    prompts = [e.prompt for e in list(task.heldout)[:8]]

    def answer_nll(model) -> float:
        r, _ = evaluate(model, lm.tokenizer, held, task.style, "peer", fp_logprobs=fp_lp)
        return r.answer_nll

    originals = {n: lm.model.get_submodule(n).weight.detach().float() for n in names}
    run, secs = run_peer(lm, args, texts, names, args.iters)
    grid = grid_check(run.weights, originals, args.group)
    peer_model = dequantized_model(lm.model, run.weights)
    drift = layer_drift(lm.model, peer_model, lm.tokenizer, prompts)
    # the block that adds the most drift, and what it does alone / what removing it does
    jump = max(range(len(drift)), key=lambda i: drift[i] - (drift[i - 1] if i else 0.0))
    block = [n for n in names if n.startswith(f"model.layers.{jump}.")]
    fp_block = {n: originals[n] for n in block}
    swaps = {
        f"fp model + peer block {jump}": mixed_ppl(
            lm.model, lm.tokenizer, text, run.weights, block
        ),
        f"peer model + fp block {jump}": mixed_ppl(peer_model, lm.tokenizer, text, fp_block, block),
        **{
            f"fp model + peer {n}": mixed_ppl(lm.model, lm.tokenizer, text, run.weights, [n])
            for n in block
        },
    }
    row = {
        "task": args.task,
        "peer": args.peer,
        "package": package_version(args.peer),
        "bits": args.bits,
        "group_size": args.group,
        "iters": args.iters,
        "generic_calibration": args.generic_calibration,
        "calibration_tokens": run.used.get("tokens"),
        "settings": run.settings,
        "seconds": secs,
        "fp_ppl": perplexity(lm.model, lm.tokenizer, text, max_chunks=PPL_CHUNKS),
        "peer_ppl": perplexity(peer_model, lm.tokenizer, text, max_chunks=PPL_CHUNKS),
        # the peer's own model, where it returns one: our copy must behave the same
        "peer_own_model_ppl": (
            perplexity(run.model, lm.tokenizer, text, max_chunks=PPL_CHUNKS) if run.model else None
        ),
        "answer_nll": answer_nll(peer_model),
        "max_levels": max(g["max_levels"] for g in grid.values()),
        "off_grid": [n for n, g in grid.items() if g["max_levels"] > 2**args.bits],
        "worst_rows": {
            n: grid[n]["worst_row_err"]
            for n in sorted(grid, key=lambda n: -grid[n]["worst_row_err"])[:5]
        },
        "layer_drift": drift,
        "largest_jump_layer": jump,
        "swap_ppl": swaps,
    }
    del run, peer_model
    if args.peer == "autoround" and args.iters:  # its own RTN mode, same settings, for contrast
        rtn, _ = run_peer(lm, args, texts, names, 0)
        rtn_model = dequantized_model(lm.model, rtn.weights)
        row["rtn_mode"] = {
            "ppl": perplexity(rtn_model, lm.tokenizer, text, max_chunks=PPL_CHUNKS),
            "answer_nll": answer_nll(rtn_model),
            "layer_drift": layer_drift(lm.model, rtn_model, lm.tokenizer, prompts),
            "max_levels": max(
                g["max_levels"] for g in grid_check(rtn.weights, originals, args.group).values()
            ),
        }
    print(json.dumps({k: v for k, v in row.items() if k != "settings"}, indent=1))
    stamp([row])
    path = ROOT / "bench" / "results" / "peer_breakdown.json"
    saved = json.loads(path.read_text())["rows"] if path.exists() else []
    key = lambda r: (  # noqa: E731
        r["task"],
        r["peer"],
        r["bits"],
        r["group_size"],
        r["iters"],
        r.get("generic_calibration", False),
    )
    rows = [r for r in saved if key(r) != key(row)] + [row]
    write_result("peer_breakdown", {"rows": sorted(rows, key=key)})


if __name__ == "__main__":
    main()
