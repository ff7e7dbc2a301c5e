"""Walk a model block by block: catch block inputs, collect each sequential group's
Hessians in one calibration pass, quantize the group (masked GPTQ or RTN), then feed the
block's quantized outputs to the next block, as GPTQ's llama_sequential does.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tacq.data import Batch
from tacq.errors import TacqError
from tacq.gptq import SEQUENTIAL_GROUPS, GPTQConfig, LayerQuant, gptq_matrix, rtn_matrix
from tacq.models import decoder_layers, input_device, quantizable_linears
from tacq.progress import Progress, no_progress

log = logging.getLogger(__name__)


@dataclass
class QuantResult:
    """All quantized Linears of a model, keyed by full module name."""

    layers: dict[str, LayerQuant]
    cfg: GPTQConfig
    seconds: float = 0.0
    layer_seconds: dict[str, float] = field(default_factory=dict)

    def dequantized(self) -> dict[str, Tensor]:
        return {n: lq.dequantize() for n, lq in self.layers.items()}

    @property
    def kept(self) -> int:
        return sum(int(lq.keep_mask.sum()) for lq in self.layers.values())


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


def group_hessians(
    block: nn.Module, names: dict[str, nn.Linear], inputs: list
) -> dict[str, Tensor]:
    """H = 2/n sum x x^T over the real (unpadded) tokens entering each Linear in `names`."""
    H = {
        n: torch.zeros(m.in_features, m.in_features, device=m.weight.device)
        for n, m in names.items()
    }
    count = {"n": 0}
    current_mask: list[Tensor] = []
    seen: dict[int, tuple[Tensor, Tensor]] = {}

    def make_hook(name: str):
        def hook(mod, args, output):
            x = args[0]
            key = id(x)
            if key not in seen:  # q/k/v (and up/gate) share one input: one X^T X for all
                xs = x[current_mask[0].to(x.device)].float()  # (n_real_tokens, in)
                seen[key] = (x, xs.T @ xs)  # x pinned so its id is not reused meanwhile
            H[name] += seen[key][1]

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in names.items()]
    try:
        with torch.no_grad():
            for hidden, kwargs, mask in inputs:
                current_mask[:] = [mask]
                seen.clear()
                block(hidden, **kwargs)
                count["n"] += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
    return {n: 2 * h / max(count["n"], 1) for n, h in H.items()}


def quantize_model(
    model: nn.Module,
    batches: list[Batch],
    cfg: GPTQConfig,
    keep_masks: dict[str, Tensor] | None = None,
    in_place: bool = False,
    progress: Progress | None = None,
    exec_device: str | torch.device | None = None,
) -> QuantResult:
    """Quantize every decoder q/k/v/o/gate/up/down Linear, block by block, true-sequential.

    keep_masks: name -> (out, in) bool of weights kept in 16 bits (None: plain GPTQ/RTN).
    in_place=False restores each block's original weights once its quantized outputs have
    been computed, so the model is unchanged but later blocks still see quantized inputs.
    exec_device streams: the model stays where it is (e.g. cpu) and each decoder block is
    moved to exec_device (e.g. cuda) for its turn and back, so only one block, its group's
    Hessians and the calibration activations occupy the device.
    """
    progress = progress or no_progress
    t0 = time.perf_counter()
    layers = decoder_layers(model)
    linears = quantizable_linears(model)
    result = QuantResult({}, cfg)
    name_of = {id(m): n for n, m in linears.items()}
    progress(0.0, "calibration: catching block inputs")
    homes = _stage_outside_blocks(model, exec_device)
    inputs = capture_block_inputs(model, batches)
    for i, block in enumerate(layers):
        home = next(block.parameters()).device
        if exec_device is not None:
            block.to(exec_device)
        originals = {} if in_place else {n: p.detach().clone() for n, p in block.named_parameters()}
        try:
            for group in SEQUENTIAL_GROUPS:
                progress(
                    (i + 0.1) / len(layers), f"{cfg.method} block {i + 1}/{len(layers)}: {group[0]}"
                )
                members = {
                    name_of[id(m)]: m
                    for m in block.modules()
                    if id(m) in name_of and name_of[id(m)].rsplit(".", 1)[-1] in group
                }
                if not members:
                    continue
                H = group_hessians(block, members, inputs) if cfg.method == "gptq" else {}
                for name, lin in members.items():
                    t1 = time.perf_counter()
                    M = keep_masks.get(name) if keep_masks else None
                    lq = _quantize_one(lin.weight.data, H.get(name), M, cfg)
                    lin.weight.data.copy_(lq.dequantize().to(lin.weight.device, lin.weight.dtype))
                    result.layers[name] = _to_cpu(lq)
                    result.layer_seconds[name] = time.perf_counter() - t1
            new_hidden = _run_block(block, inputs)
        except torch.OutOfMemoryError as e:
            raise TacqError(
                "Out of memory during quantization; use fewer calibration "
                "examples or a shorter max length."
            ) from e
        finally:
            if originals:
                with torch.no_grad():
                    for n, p in block.named_parameters():
                        p.copy_(originals[n])
            if exec_device is not None:
                block.to(home)
        inputs = [(h, kw, m) for h, (_, kw, m) in zip(new_hidden, inputs)]
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


def _quantize_one(W: Tensor, H: Tensor | None, M: Tensor | None, cfg: GPTQConfig) -> LayerQuant:
    if cfg.method == "rtn":
        return rtn_matrix(W, M, cfg)
    return gptq_matrix(W, H, M, cfg)


def _to_cpu(lq: LayerQuant) -> LayerQuant:
    return LayerQuant(
        lq.codes.cpu(),
        lq.scale.cpu(),
        lq.zero.cpu(),
        lq.keep_mask.cpu(),
        lq.kept_values.cpu(),
        lq.bits,
        None if lq.hinv_diag is None else lq.hinv_diag.cpu(),
    )


def apply_quantized_(model: nn.Module, result: QuantResult) -> nn.Module:
    """Write the dequantized weights of `result` into `model` (in place)."""
    linears = quantizable_linears(model)
    missing = set(result.layers) - set(linears)
    if missing:
        raise TacqError(
            f"The quantized result does not fit this model ({len(missing)} unknown layers)."
        )
    with torch.no_grad():
        for name, lq in result.layers.items():
            w = linears[name].weight
            w.copy_(lq.dequantize().to(w.device, w.dtype))
    return model


def quantized_copy(model: nn.Module, result: QuantResult) -> nn.Module:
    """A deep copy of `model` carrying the quantized weights; the original is untouched.

    Tensors that are not quantized (embeddings, norms, lm_head) are rounded through fp16,
    the precision a packed export stores, so an exported and reloaded variant is identical.
    """
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.copy_(p.half().to(p.dtype))
    return apply_quantized_(out, result)
