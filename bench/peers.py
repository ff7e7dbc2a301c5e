"""What users would run instead: AutoRound and HQQ, each run by its own package.

Each peer quantizes the same SmolLM2 (fp32, CPU) at the bit widths and group sizes its
own docs use; its dequantized weights are copied into the same transformers model and
scored by our evaluator on the task's held-out split, exactly as bench/quality.py scores
ours. AutoRound gets the calibration examples TaCQ uses (the first --examples of the
task's calibration split, prompt + answer as one text each), as a list of strings: no
dataset download. Each row records the package version, the settings, the samples and
tokens the peer used, its wall time and its honest bits per weight (its scales and zeros
counted by tacq.select.linear_bytes, the function that counts ours).

    pip install -r bench/requirements-peers.txt    # optional; the core install is unchanged
    python bench/peers.py --task antonyms --bits 2,3
    python bench/peers.py --task antonyms --peers hqq --bits 2 --iters 50
    python bench/peers.py --task antonyms --peers autoround --iters 0   # its RTN mode

A peer whose package is missing or fails is recorded with its error instead of numbers;
nothing is substituted under its name. Writes bench/results/peers.json (merged by task,
peer, bits and group size).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

import torch
from _common import ROOT, stamp, write_result
from quality import per_example
from torch import nn

# Group sizes each package's own docs and examples use for that bit width.
PEER_POINTS = {
    "hqq": {2: (64, 32), 3: (64,)},
    "autoround": {2: (128, 64), 3: (128,)},
}


@dataclass
class PeerRun:
    """What a peer produced: dequantized weights and how it got there."""

    weights: dict[str, torch.Tensor]  # Linear name -> dequantized (out, in) weight
    settings: dict
    fmt: dict  # bytes per scale and per zero in the peer's own storage
    used: dict = field(default_factory=dict)  # samples / tokens the peer really used


def version(package: str) -> str:
    return metadata.version(package)


# ------------------------------------------------------------ HQQ


def run_hqq(model: nn.Module, names: list[str], bits: int, group: int, **_) -> PeerRun:
    """HQQ's HQQLinear on each Linear (calibration-free), dequantized by HQQ itself."""
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    cfg = BaseQuantizeConfig(nbits=bits, group_size=group, axis=1)
    mods = dict(model.named_modules())
    weights = {}
    for name in names:
        q = HQQLinear(mods[name], cfg, del_orig=False, compute_dtype=torch.float32, device="cpu")
        weights[name] = q.dequantize().float().reshape(mods[name].weight.shape).clone()
    settings = {"nbits": bits, "group_size": group, "axis": 1, "optimize": True}
    # HQQ keeps a float scale and a float (unrounded below 4 bits) zero per group: fp16 each
    return PeerRun(weights, settings, {"scale_bytes": 2, "zero_bytes": 2})


# ------------------------------------------------------------ AutoRound


def calibration_chunks(tokenizer, texts: list[str], seqlen: int) -> list[torch.Tensor]:
    """The texts joined (blank line between) and cut into [1, seqlen] token tensors.

    AutoRound skips any text shorter than its seqlen; task examples are 30-60 tokens, so
    joined chunks let it use every calibration token TaCQ sees (the last partial chunk is
    dropped). No EOS between texts: AutoRound masks pad tokens, and pad is EOS here.
    """
    sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t, add_special_tokens=False)["input_ids"] + sep
    return [
        torch.tensor(ids[i : i + seqlen]).unsqueeze(0)
        for i in range(0, len(ids) - seqlen + 1, seqlen)
    ]


def run_autoround(
    model: nn.Module,
    names: list[str],
    bits: int,
    group: int,
    tokenizer=None,
    texts: list[str] | None = None,
    iters: int = 200,
    seed: int = 0,
    seqlen: int = 64,
    batch_size: int = 4,
) -> PeerRun:
    """AutoRound (sign-gradient rounding) tuned on the calibration texts.

    amp=False keeps the model in fp32 (AutoRound otherwise casts it to bf16 in place);
    after quantize() each Linear holds AutoRound's own dequantized weight, scale * (q - zp).
    A hook on the embedding counts the samples and tokens AutoRound really ran.
    """
    from auto_round import AutoRound
    from auto_round.algorithms.quantization.sign_round.config import SignRoundConfig
    from auto_round.schemes import QuantizationScheme

    chunks = calibration_chunks(tokenizer, texts or [], seqlen)
    used = {"samples": 0, "tokens": 0}

    def count(_mod, args) -> None:
        used["samples"] += args[0].shape[0]
        used["tokens"] += args[0].numel()

    hook = model.get_input_embeddings().register_forward_pre_hook(count)
    try:
        ar = AutoRound(
            model,
            tokenizer,
            scheme=QuantizationScheme(bits=bits, group_size=group, sym=False, data_type="int"),
            alg_configs=SignRoundConfig(iters=iters),
            dataset=chunks,
            seqlen=seqlen,
            nsamples=len(chunks),
            batch_size=batch_size,
            seed=seed,
            device_map="cpu",
            amp=False,
            enable_torch_compile=False,
            low_cpu_mem_usage=False,
        )
        qmodel, _ = ar.quantize()
    finally:
        hook.remove()
    mods = dict(qmodel.named_modules())
    skipped = [n for n in names if getattr(mods[n], "scale", None) is None]
    if skipped:
        raise RuntimeError(f"AutoRound left {len(skipped)} Linear(s) unquantized: {skipped[:3]}")
    weights = {n: mods[n].weight.detach().float().clone() for n in names}
    settings = {
        "bits": bits,
        "group_size": group,
        "sym": False,
        "iters": iters,
        "seqlen": seqlen,
        "nsamples": len(chunks),
        "batch_size": batch_size,
        "seed": seed,
        "calibration": "task examples joined by blank lines, cut into seqlen-token chunks",
    }
    # fp16 scale per group; zero points packed to `bits` bits (auto_round export format)
    return PeerRun(weights, settings, {"scale_bytes": 2, "zero_bytes": bits / 8}, used)


PEERS: dict[str, tuple[str, Callable[..., PeerRun]]] = {
    "hqq": ("hqq", run_hqq),
    "autoround": ("auto-round", run_autoround),
}


# ------------------------------------------------------------ scoring


def dequantized_model(model: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of the original model with the peer's dequantized weights in its Linears."""
    out = copy.deepcopy(model)
    mods = dict(out.named_modules())
    for name, w in weights.items():
        lin = mods[name]
        if w.shape != lin.weight.shape:
            raise ValueError(f"{name}: peer weight {tuple(w.shape)} != {tuple(lin.weight.shape)}")
        lin.weight.data.copy_(w.to(lin.weight.dtype))
    return out


def honest_bpw(model: nn.Module, names: list[str], bits: int, group: int, fmt: dict) -> float:
    """Bits per quantized weight with the peer's scales and zeros counted."""
    from tacq.select import NumberFormat, linear_bytes

    number = NumberFormat(bits, group, fmt["scale_bytes"], fmt["zero_bytes"])
    mods = dict(model.named_modules())
    total = n = 0
    for name in names:
        out_f, in_f = mods[name].weight.shape
        code, qparam, _ = linear_bytes(out_f, in_f, 0, number)
        total += code + qparam
        n += out_f * in_f
    return 8 * total / n


def method_name(peer: str, group: int, iters: int) -> str:
    """'autoround_g128'; AutoRound with no tuning steps is its RTN mode: 'autoround-rtn_g128'."""
    return f"{peer}-rtn_g{group}" if peer == "autoround" and iters == 0 else f"{peer}_g{group}"


def run_point(peer: str, bits: int, group: int, ctx: dict, args) -> dict:
    """One peer at one bit width and group size -> a result row (or its error)."""
    from tacq.evaluate import evaluate, perplexity

    package, fn = PEERS[peer]
    base = {
        "task": args.task,
        "bits": bits,
        "method": method_name(peer, group, args.iters),
        "peer": peer,
        "group_size": group,
        "calib_examples": len(ctx["texts"]),
        "heldout_examples": len(ctx["held"]),
    }
    try:
        base["package"] = f"{package} {version(package)}"
    except metadata.PackageNotFoundError:
        return {
            **base,
            "error": f"{package} is not installed (pip install -r bench/requirements-peers.txt)",
        }
    lm = ctx["lm"]
    t = time.perf_counter()
    try:
        run = fn(
            copy.deepcopy(lm.model),
            ctx["names"],
            bits,
            group,
            tokenizer=lm.tokenizer,
            texts=ctx["texts"],
            iters=args.iters,
            seed=args.seed,
        )
    except Exception as e:  # noqa: BLE001 - recorded, with the error, instead of numbers
        traceback.print_exc()
        return {**base, "error": f"{type(e).__name__}: {e}"[:500]}
    secs = time.perf_counter() - t
    model = dequantized_model(lm.model, run.weights)
    r, _ = evaluate(
        model, lm.tokenizer, ctx["held"], ctx["style"], base["method"], fp_logprobs=ctx["fp_lp"]
    )
    row = {
        **base,
        "settings": run.settings,
        "used": run.used,
        "bpw": float(bits),
        "bpw_honest": honest_bpw(lm.model, ctx["names"], bits, group, run.fmt),
        "answer_nll": r.answer_nll,
        "exact_match": r.exact_match,
        "kl_to_fp": r.kl_to_fp,
        "ppl": perplexity(model, lm.tokenizer, ctx["text"], max_chunks=args.ppl_chunks),
        "seconds": secs,
        **per_example(r),
    }
    print(
        f"{args.task} {bits}-bit {row['method']:<16} BPW {row['bpw_honest']:.3f}  NLL "
        f"{r.answer_nll:7.3f}  EM {r.exact_match:5.3f}  ({secs:.0f} s)",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="antonyms")
    ap.add_argument("--bits", default="2,3")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--examples", type=int, default=32, help="calibration examples (as TaCQ)")
    ap.add_argument(
        "--iters", type=int, default=200, help="AutoRound tuning steps per block (its default)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ppl-chunks", type=int, default=8)
    args = ap.parse_args()
    peers = args.peers.split(",")
    if unknown := [p for p in peers if p not in PEERS]:
        ap.error(f"unknown peer(s) {unknown}; choose from {', '.join(PEERS)}")

    from tacq.data import DataConfig, generic_text, load_task
    from tacq.evaluate import evaluate
    from tacq.models import load_model, quantizable_linears
    from tacq.workflow import Study

    lm = load_model()
    task = load_task(args.task)
    study = Study(lm, task, DataConfig(max_examples=args.examples))
    texts = [e.prompt + e.answer for e in study.calib_examples]
    held = list(task.heldout)
    _, fp_lp = evaluate(lm.model, lm.tokenizer, held, task.style, "fp")
    ctx = {
        "lm": lm,
        "names": list(quantizable_linears(lm.model)),
        "texts": texts,
        "held": held,
        "style": task.style,
        "fp_lp": fp_lp,
        "text": generic_text(),
    }
    rows = []
    for peer in peers:
        for bits in (int(b) for b in args.bits.split(",")):
            for group in PEER_POINTS[peer][bits]:
                rows.append(run_point(peer, bits, group, ctx, args))
    stamp(rows)
    path = ROOT / "bench" / "results" / "peers.json"
    saved = json.loads(path.read_text())["rows"] if path.exists() else []
    key = lambda r: (r["task"], r["method"], r["bits"])  # noqa: E731
    done = {key(r) for r in rows}
    merged = [r for r in saved if key(r) not in done] + rows
    merged.sort(key=lambda r: (r["task"], r["bits"], r["method"]))
    write_result("peers", {"rows": merged})


if __name__ == "__main__":
    main()
