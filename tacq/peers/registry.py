"""What users would run instead: AutoRound and HQQ, each run by its own package.

Why: a TaCQ variant is worth making only if it beats what a user would pick at the same
bits, so the app and the benches put the peers beside it. A peer is never re-implemented
here: its package quantizes each Linear, and its dequantized weights are copied into the
same transformers model, scored by our evaluator. The packages are optional extras
(`pip install -r bench/requirements-peers.txt`); the core install does not need them.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

import torch
from torch import nn

from tacq.data.calibration import calibration_chunks
from tacq.errors import TacqError
from tacq.formats.sizes import NumberFormat, linear_bytes

INSTALL = "pip install -r bench/requirements-peers.txt"

# Group sizes each package's own docs and examples use for that bit width.
PEER_POINTS = {
    "hqq": {2: (64, 32), 3: (64,), 4: (64,)},
    "autoround": {2: (128, 64), 3: (128,), 4: (128,)},
}


@dataclass
class PeerRun:
    """What a peer produced: dequantized weights and how it got there."""

    weights: dict[str, torch.Tensor]  # Linear name -> dequantized (out, in) weight
    settings: dict
    fmt: dict  # bytes per scale and per zero in the peer's own storage
    used: dict = field(default_factory=dict)  # samples / tokens the peer really used
    # the peer's own model after quantizing, where it has one (AutoRound): lets a bench check
    # that our copy of its weights behaves as its own model does
    model: nn.Module | None = None


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
    iters=0 is AutoRound's own RTN mode (no tuning).
    """
    from auto_round import AutoRound
    from auto_round.algorithms.quantization.sign_round.config import SignRoundConfig
    from auto_round.schemes import QuantizationScheme

    chunks = calibration_chunks(tokenizer, texts or [], seqlen)
    if not chunks:
        raise TacqError(f"AutoRound needs at least {seqlen} tokens of calibration text.")
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
    return PeerRun(weights, settings, {"scale_bytes": 2, "zero_bytes": bits / 8}, used, qmodel)


# name -> (package on PyPI, module to import, runner)
PEERS: dict[str, tuple[str, str, Callable[..., PeerRun]]] = {
    "hqq": ("hqq", "hqq", run_hqq),
    "autoround": ("auto-round", "auto_round", run_autoround),
}
CALIBRATED = {"autoround"}  # peers that read calibration texts


def package_version(peer: str) -> str | None:
    """'hqq 0.2.8.post1', or None when the peer's package is not installed."""
    package, module, _ = PEERS[peer]
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return None


def check_peer(peer: str, bits: int, group: int) -> None:
    """A clear message for an unknown peer, a missing package or an untested setting."""
    if peer not in PEERS:
        raise TacqError(f"Unknown peer {peer!r}; choose from {', '.join(PEERS)}.")
    if package_version(peer) is None:
        raise TacqError(f"{PEERS[peer][0]} is not installed here: {INSTALL}")
    if group not in PEER_POINTS[peer].get(bits, ()):
        raise TacqError(
            f"{peer} at {bits} bits runs with group sizes "
            f"{', '.join(map(str, PEER_POINTS[peer].get(bits, ())))} (got {group})."
        )


def dequantized_model(model: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """The original model with the peer's dequantized weights in its Linears (own dense
    copies); every other tensor is the original's, shared, as our packed variants share it."""
    own = {id(mods.weight) for n, mods in model.named_modules() if n in weights}
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()] if id(t) not in own}
    out = copy.deepcopy(model, memo)
    mods = dict(out.named_modules())
    for name, w in weights.items():
        lin = mods[name]
        if w.shape != lin.weight.shape:
            raise ValueError(f"{name}: peer weight {tuple(w.shape)} != {tuple(lin.weight.shape)}")
        lin.weight.data.copy_(w.to(lin.weight.dtype))
    return out


def peer_format(bits: int, group: int, fmt: dict) -> NumberFormat:
    """The peer's storage as our NumberFormat: what tacq.circuit.select counts bytes with."""
    return NumberFormat(bits, group, fmt["scale_bytes"], fmt["zero_bytes"])


def honest_bpw(
    model: nn.Module,
    names: list[str],
    bits: int,
    group: int,
    fmt: dict,
    kept: dict[str, int] | None = None,
) -> float:
    """Bits per quantized weight with the peer's scales and zeros counted, plus any weights
    kept at full precision on top of its rounding (kept: Linear name -> count), as CSR."""
    number = peer_format(bits, group, fmt)
    mods = dict(model.named_modules())
    total = n = 0
    for name in names:
        out_f, in_f = mods[name].weight.shape
        total += sum(linear_bytes(out_f, in_f, (kept or {}).get(name, 0), number))
        n += out_f * in_f
    return 8 * total / n
