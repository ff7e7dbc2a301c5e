"""Walk a model block by block: catch block inputs, collect each sequential group's
Hessians in one calibration pass, quantize the group (masked GPTQ or RTN), then feed the
block's quantized outputs to the next block, as GPTQ's llama_sequential does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tacq.data.batches import Batch
from tacq.errors import TacqError
from tacq.formats.grid import GPTQConfig, LayerQuant, QParams
from tacq.formats.held import PackedLayerQuant
from tacq.models import (
    MODULE_KINDS,
    SEQUENTIAL_GROUPS,
    decoder_layers,
    input_device,
    module_kind,
    quantizable_linears,
)
from tacq.progress import Progress, no_progress
from tacq.quant.gptq import gptq_stacked, rtn_matrix

log = logging.getLogger(__name__)


@dataclass
class QuantResult:
    """All quantized Linears of a model, keyed by full module name."""

    layers: dict[str, LayerQuant]
    cfg: GPTQConfig
    seconds: float = 0.0
    layer_seconds: dict[str, float] = field(default_factory=dict)
    # pass name -> what a pass after the quantizer recorded, defined by that pass
    # (tacq.quant.rounding.RoundingLog, tacq.quant.distill.DistillLog)
    logs: dict[str, object] = field(default_factory=dict)

    def dequantized(self) -> dict[str, Tensor]:
        return {n: lq.dequantize() for n, lq in self.layers.items()}

    def qparams(self) -> dict[str, QParams]:
        """name -> (scale, zero): what a masked run of the same weights can reuse."""
        return {n: (lq.scale, lq.zero) for n, lq in self.layers.items()}

    @property
    def kept(self) -> int:
        return sum(lq.kept_values.numel() for lq in self.layers.values())


class _StopForward(Exception):
    pass


def capture_block_inputs(
    model: nn.Module, batches: list[Batch]
) -> list[tuple[Tensor, dict, Tensor]]:
    """(hidden states, kwargs, attention mask) entering block 0, one per batch."""
    first = decoder_layers(model)[0]
    caught: list = []

    def catcher(mod, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        caught.append((hidden.detach(), kwargs))
        raise _StopForward

    handle = first.register_forward_pre_hook(catcher, with_kwargs=True)
    device = input_device(model)
    out = []
    try:
        for batch in batches:
            try:
                with torch.no_grad():
                    model(
                        input_ids=batch.input_ids.to(device),
                        attention_mask=batch.attention_mask.to(device),
                        use_cache=False,
                    )
            except _StopForward:
                pass
            hidden, kwargs = caught.pop()
            out.append((hidden, kwargs, batch.attention_mask.to(device).bool()))
    finally:
        handle.remove()
    return out


def _run_block(block: nn.Module, inputs: list) -> list[Tensor]:
    """Block outputs for every batch (handles tuple or tensor returns)."""
    outs = []
    with torch.no_grad():
        for hidden, kwargs, _ in inputs:
            y = block(hidden, **kwargs)
            outs.append(y[0] if isinstance(y, tuple) else y)
    return outs


@dataclass
class SharedInput:
    """Linears of one sequential group that read the same input, and its Hessian."""

    names: list[str]
    H: Tensor  # (in, in) = 2/n sum x x^T over real tokens


def group_hessians(
    block: nn.Module, names: dict[str, nn.Linear], inputs: list, stop_early: bool = True
) -> list[SharedInput]:
    """H = 2/n sum x x^T over the real (unpadded) tokens entering the Linears in `names`.

    Linears fed the same tensor (q/k/v, gate/up) share one H. stop_early ends each block
    pass once every Linear of the group has seen its input, so the rest of the block is
    not computed (the Hessians are the same either way).
    """
    H: list[Tensor] = []
    members: list[list[str]] = []
    count = {"n": 0}
    current_mask: list[Tensor] = []
    seen: dict[int, tuple[Tensor, int]] = {}  # id(input) -> (input, index into H)
    done: set[str] = set()

    def make_hook(name: str):
        def hook(mod, args, output):
            x = args[0]
            key = id(x)
            if key not in seen:  # q/k/v (and up/gate) share one input: one X^T X for all
                xs = x[current_mask[0].to(x.device)].float()  # (n_real_tokens, in)
                # Every pass meets the shared inputs in the same order: the k-th new
                # tensor of a pass is shared input k (created on the first pass).
                if len(seen) == len(H):
                    H.append(torch.zeros(xs.shape[1], xs.shape[1], device=xs.device))
                    members.append([])
                idx = len(seen)
                seen[key] = (x, idx)  # x pinned so its id is not reused meanwhile
                H[idx] += xs.T @ xs
            idx = seen[key][1]
            if name not in members[idx]:
                members[idx].append(name)
            done.add(name)
            if stop_early and len(done) == len(names):
                raise _StopForward

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in names.items()]
    try:
        with torch.no_grad():
            for hidden, kwargs, mask in inputs:
                current_mask[:] = [mask]
                seen.clear()
                done.clear()
                try:
                    block(hidden, **kwargs)
                except _StopForward:
                    pass
                count["n"] += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
    out = [SharedInput(m, 2 * h / max(count["n"], 1)) for m, h in zip(members, H)]
    for name, lin in names.items():  # never called: an all-zero Hessian, as if dead
        if not any(name in s.names for s in out):
            zeros = torch.zeros(lin.in_features, lin.in_features, device=lin.weight.device)
            out.append(SharedInput([name], zeros))
    return out


def quantize_model(
    model: nn.Module,
    batches: list[Batch],
    cfg: GPTQConfig,
    keep_masks: Mapping[str, Tensor] | None = None,
    in_place: bool = False,
    progress: Progress | None = None,
    exec_device: str | torch.device | None = None,
    unmasked: dict[str, QParams] | None = None,
    sequential: bool = True,
    group_quantizer: GroupQuantizer | None = None,
) -> QuantResult:
    """Quantize every decoder q/k/v/o/gate/up/down Linear, block by block, true-sequential.

    keep_masks: name -> (out, in) bool of weights kept in 16 bits (None: plain GPTQ/RTN).
    in_place=False restores each block's original weights once its quantized outputs have
    been computed, so the model is unchanged but later blocks still see quantized inputs.
    exec_device streams: the model stays where it is (e.g. cpu) and each decoder block is
    moved to exec_device (e.g. cuda) for its turn and back, so only one block, its group's
    Hessians and the calibration activations occupy the device.
    unmasked: name -> (scale, zero) of the unmasked quantization of the same weights and
    bits (e.g. `QuantResult.qparams()` of the reference); rows with no kept weight reuse
    them instead of searching again (same values).
    sequential=False takes every Hessian from the original model's activations (each group
    and block sees unquantized inputs) instead of true-sequential ones: a lever measured by
    bench/levers.py, not the paper's default.
    group_quantizer: what quantizes one sequential group (default `quantize_group`); the
    benches pass the pre-stacking yardstick (bench/gptq_yardstick.py) to time against it.
    """
    quantize_one_group = group_quantizer or quantize_group
    if not sequential and in_place:
        raise ValueError("Hessians from the original activations need in_place=False.")
    progress = progress or no_progress
    t0 = time.perf_counter()
    layers = decoder_layers(model)
    name_of = {id(m): n for n, m in quantizable_linears(model).items()}
    result = QuantResult({}, cfg)
    progress(0.0, "calibration: catching block inputs")
    homes = _stage_outside_blocks(model, exec_device)
    try:  # every device move is undone, also on cancel or error
        inputs = capture_block_inputs(model, batches)
        for i, block in enumerate(layers):
            home = next(block.parameters()).device
            originals = (
                {} if in_place else {n: p.detach().clone() for n, p in block.named_parameters()}
            )
            try:
                if exec_device is not None:
                    block.to(exec_device)
                fp_hidden = None if sequential else _run_block(block, inputs)
                pending: list[tuple[dict, dict]] = []  # stored after the block (sequential=False)
                for group in SEQUENTIAL_GROUPS:
                    progress(
                        (i + 0.1) / len(layers),
                        f"{cfg.method} block {i + 1}/{len(layers)}: {MODULE_KINDS[group[0]]}",
                    )
                    members = {
                        name_of[id(m)]: m
                        for m in block.modules()
                        if id(m) in name_of and module_kind(name_of[id(m)]) in group
                    }
                    if members:
                        done = quantize_one_group(members, inputs, cfg, keep_masks, unmasked, block)
                        if sequential:
                            _store_(members, done, result)
                        else:
                            pending.append((members, done))
                for members, done in pending:
                    _store_(members, done, result)
                new_hidden = _run_block(block, inputs) if fp_hidden is None else fp_hidden
            except torch.OutOfMemoryError as e:
                raise TacqError(
                    "Out of memory during quantization; use fewer calibration "
                    "examples or a shorter max length."
                ) from e
            finally:
                if exec_device is not None:
                    block.to(home)
                if originals:
                    with torch.no_grad():
                        for n, p in block.named_parameters():
                            p.copy_(originals[n])
            inputs = [(h, kw, m) for h, (_, kw, m) in zip(new_hidden, inputs)]
    finally:
        for mod, dev in homes:
            mod.to(dev)
    result.seconds = time.perf_counter() - t0
    progress(1.0, f"{cfg.method}: done in {result.seconds:.0f} s")
    return result


def _stage_outside_blocks(model: nn.Module, exec_device) -> list[tuple[nn.Module, torch.device]]:
    """Move the modules before the blocks (embeddings, rotary) to exec_device; -> how to undo."""
    if exec_device is None:
        return []
    inner = getattr(model, "model", model)
    moved = []
    for name, mod in inner.named_children():
        if name == "layers":
            continue
        p = next(mod.parameters(), None)
        p = next(mod.buffers(), None) if p is None else p
        moved.append((mod, p.device if p is not None else torch.device("cpu")))
        mod.to(exec_device)
    return moved


# One sequential group's Linears, their block's inputs, the config, keep masks, the unmasked
# grids and the block -> name: (result, seconds spent on it).
GroupQuantizer = Callable[
    [
        dict[str, nn.Linear],
        list,
        GPTQConfig,
        Mapping[str, Tensor] | None,
        dict[str, QParams] | None,
        nn.Module,
    ],
    dict[str, tuple[LayerQuant, float]],
]


def quantize_group(
    members: dict[str, nn.Linear],
    inputs: list,
    cfg: GPTQConfig,
    keep_masks: Mapping[str, Tensor] | None,
    unmasked: dict[str, QParams] | None,
    block: nn.Module,
) -> dict[str, tuple[LayerQuant, float]]:
    """Quantize one sequential group -> name: (result, seconds spent on it).

    Linears sharing an input are quantized stacked (one search, Cholesky and column loop),
    the Hessian passes stop once the group has seen its inputs, and rows with no kept weight
    reuse `unmasked` grids.
    """
    masks = keep_masks or {}
    out: dict[str, tuple[LayerQuant, float]] = {}
    if cfg.method == "rtn":
        for name, lin in members.items():
            t = time.perf_counter()
            M = masks.get(name)
            base = unmasked.get(name) if unmasked else None
            lq = rtn_matrix(lin.weight.data, M, cfg, base)
            out[name] = (lq, time.perf_counter() - t)
        return out
    for shared in group_hessians(block, members, inputs):
        names = shared.names
        t = time.perf_counter()
        bases = [unmasked[n] for n in names] if unmasked else None
        lqs = gptq_stacked(
            [members[n].weight.data for n in names],
            shared.H,
            [masks.get(n) for n in names],
            cfg,
            bases,
        )
        seconds = (time.perf_counter() - t) / len(names)  # shared work, split evenly
        out |= {n: (lq, seconds) for n, lq in zip(names, lqs)}
    return out


def _store_(
    members: dict[str, nn.Linear], done: dict[str, tuple[LayerQuant, float]], result: QuantResult
) -> None:
    """Write each quantized weight into its Linear (later groups see it) and keep the result."""
    for name, lin in members.items():  # module order, as results are listed
        lq, seconds = done[name]
        lin.weight.data.copy_(lq.dequantize().to(lin.weight.device, lin.weight.dtype))
        result.layers[name] = _to_cpu(lq)
        result.layer_seconds[name] = seconds


def _to_cpu(lq: LayerQuant) -> PackedLayerQuant:
    """The result moved to the host and held packed (bits/8 bytes per weight, not 2 bytes:
    a whole model's results are held until the variant is built)."""
    return PackedLayerQuant.from_layer(
        LayerQuant(
            lq.codes.cpu(),
            lq.scale.cpu(),
            lq.zero.cpu(),
            lq.keep_mask.cpu(),
            lq.kept_values.cpu(),
            lq.bits,
            None if lq.hinv_diag is None else lq.hinv_diag.cpu(),
            lq.group_size,
            lq.rotation,
        )
    )
