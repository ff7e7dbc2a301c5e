"""Per-sample absolute gradients G = sum_s |dL_s/dW| for every quantizable Linear.

For a Linear y = x W^T, dL_s/dW = sum_t g_{s,t} x_{s,t}^T over the tokens t of sample s.
Hooks keep each Linear's input x and catch its output gradient g during one batched
backward pass, so the per-sample gradients of the whole batch come from products g_s^T x_s
(one (out, in) matmul per sample, folded into the sums in place): no batch-size-1
forward/backward loop (the official code's way, kept here as `abs_grads_loop`, the
reference for tests and benchmarks).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from tacq.cache import cache_key, load_checked, read_meta, save_atomic, tacq_home
from tacq.data.batches import Batch
from tacq.errors import TacqError
from tacq.models import input_device, quantizable_linears
from tacq.progress import Progress, no_progress

log = logging.getLogger(__name__)

STAT_PREFIXES = ("abs", "sq", "sum")
EXTRA_PREFIXES = ("sq", "sum")  # what Fisher, the signed gradient and SqueezeLLM-like read


@dataclass(frozen=True)
class GradientConfig:
    batch_size: int = 8  # samples per forward/backward (peak memory ~ B x T x vocab)
    answer_only: bool = False  # loss on answer tokens only (official code: all tokens)
    # The first pass also sums g^2 (Fisher) and the signed g: 12 bytes per weight, not 4.
    # Off, a score that reads them gets them from a second pass (collect_extra), which
    # never sums |g| again; the CLI turns it on when a metric it will run reads them.
    extra_stats: bool = False
    # Where the running sums live: fp32 on the model's device is exact; "cpu" keeps them in
    # host memory; bfloat16 halves them. "auto": chosen from the plan before collecting
    # (tacq.circuit.accumulators.choose_accumulator): fp32 on the device, else bf16, else the host.
    accum_dtype: str = "auto"
    accum_device: str = "auto"  # "auto", "model" or "cpu"
    version: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 512:
            raise TacqError(f"Batch size must be 1..512 (got {self.batch_size}).")
        if self.accum_dtype not in ("auto", "float32", "bfloat16"):
            raise TacqError(
                f"Accumulator dtype must be auto, float32 or bfloat16 ({self.accum_dtype})."
            )
        if self.accum_device not in ("auto", "model", "cpu"):
            raise TacqError(
                f"Accumulator device must be 'auto', 'model' or 'cpu' ({self.accum_device})."
            )

    @property
    def kinds(self) -> tuple[str, ...]:
        """The sums the first pass collects."""
        return STAT_PREFIXES if self.extra_stats else ("abs",)

    @property
    def resolved(self) -> bool:
        return "auto" not in (self.accum_dtype, self.accum_device)

    @property
    def accumulator(self) -> str:
        """What the status line says: 'fp32 on the model's device', 'bf16 on host'..."""
        dtype = {"float32": "fp32", "bfloat16": "bf16"}.get(self.accum_dtype, "auto")
        where = {"model": "on the model's device", "cpu": "in host memory"}
        return f"{dtype} sums {where.get(self.accum_device, 'auto')}"


@dataclass
class GradStats:
    """Summed gradient statistics per Linear, all (out, in) on the cpu in the accumulation
    dtype (fp32, or bf16 when chosen to fit)."""

    abs_grad: dict[str, Tensor]  # G = sum_s |dL_s/dW|
    sq_grad: dict[str, Tensor] = field(default_factory=dict)  # sum_s (dL_s/dW)^2
    sum_grad: dict[str, Tensor] = field(default_factory=dict)  # sum_s dL_s/dW
    n_samples: int = 0
    n_tokens: int = 0  # loss tokens
    mean_loss: float = 0.0  # mean over samples of the per-sample loss
    from_cache: bool = False
    seconds: float = 0.0
    accumulator: str = ""  # GradientConfig.accumulator of the pass that made abs_grad


def token_loss(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Next-token cross-entropy at every position and which positions are loss tokens.
    -> (ce, mask), both (B, T-1) fp32."""
    targets = input_ids[:, 1:]
    mask = loss_mask[:, 1:].float()
    ce = nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, reduction="none"
    )
    return ce, mask


def per_sample_loss(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> Tensor:
    """Mean next-token cross-entropy of each sample over its loss tokens. -> (B,) fp32."""
    ce, mask = token_loss(logits, input_ids, loss_mask)
    return (ce * mask).sum(1) / mask.sum(1).clamp(min=1)


class _Accumulator:
    """Holds running sums and adds the per-sample products when an output grad arrives."""

    def __init__(
        self, linears: dict[str, nn.Linear], cfg: GradientConfig, kinds: tuple[str, ...]
    ) -> None:
        if not cfg.resolved:
            raise ValueError("resolve the accumulator first (choose_accumulator)")
        self.cfg, self.kinds = cfg, kinds
        self.dtype = getattr(torch, cfg.accum_dtype)
        # Each sum sits beside its weight (a device_map spreads layers over GPUs); weights
        # offloaded by accelerate (device "meta") and accum_device="cpu" sum on the host.
        cpu = torch.device("cpu")
        self.where = {
            n: cpu
            if cfg.accum_device == "cpu" or m.weight.device.type == "meta"
            else m.weight.device
            for n, m in linears.items()
        }

        def zeros() -> dict[str, Tensor]:
            return {
                n: torch.zeros(m.weight.shape, dtype=self.dtype, device=self.where[n])
                for n, m in linears.items()
            }

        self.abs = zeros() if "abs" in kinds else {}
        self.scratch: dict[tuple, Tensor] = {}  # (shape, device) -> reused (out, in) fp32
        self.sq = zeros() if "sq" in kinds else {}
        self.sum = zeros() if "sum" in kinds else {}

    def add(self, name: str, x: Tensor, g: Tensor) -> None:
        """x: (B, T, in), g: (B, T, out) -> add |per-sample dW| summed over the B samples.

        One (out, in) product per sample, made absolute in place and added: it stays in
        cache, where a (B, out, in) block plus out-of-place abs and a reduction over B was
        measured 4x slower on CPU (same FLOPs, three times the memory traffic). The product
        goes into a reused scratch matrix per shape: a fresh allocation per sample costs
        page faults, 2.7x the time of the whole accumulation on a 2-core CPU.
        """
        fast = self.dtype == torch.float32 and self.where[name] == g.device
        shape = (g.shape[-1], x.shape[-1])
        per = self.scratch.get((shape, g.device))
        if per is None:
            per = self.scratch[(shape, g.device)] = g.new_empty(shape, dtype=torch.float32)
        for s in range(x.shape[0]):
            torch.mm(g[s].float().T, x[s].float(), out=per)  # (out, in) = sum_t g_t x_t^T
            if self.sum:
                self._add(self.sum[name], per, fast)
            if self.sq:
                if fast:
                    self.sq[name].addcmul_(per, per)
                else:
                    self._add(self.sq[name], per * per, fast)
            if self.abs:
                self._add(self.abs[name], per.abs_(), fast)

    def _add(self, acc: Tensor, t: Tensor, fast: bool) -> None:
        acc.add_(t if fast else t.to(acc.device, self.dtype))


def _attach_hooks(model: nn.Module, linears: dict[str, nn.Linear], acc: _Accumulator) -> list:
    """Forward hooks save each Linear input and hook its output's gradient."""
    handles = []

    def make_hook(name: str):
        def hook(mod, inputs, output):
            x = inputs[0].detach()
            if output.requires_grad:
                output.register_hook(lambda g: acc.add(name, x, g.detach()))

        return hook

    for name, lin in linears.items():
        handles.append(lin.register_forward_hook(make_hook(name)))
    # Weights stay frozen (no weight .grad is ever built); the graph starts at the embeddings.
    emb = model.get_input_embeddings()
    handles.append(emb.register_forward_hook(lambda m, i, o: o.requires_grad_(True)))
    return handles


def collect_abs_grads(
    model: nn.Module,
    batches: list[Batch],
    cfg: GradientConfig,
    progress: Progress | None = None,
    kinds: tuple[str, ...] | None = None,
) -> GradStats:
    """Batched per-sample gradient sums over `batches` for every quantizable Linear: the
    kinds of cfg (|g|, with extra_stats g^2 and g too), or `kinds` (the second pass:
    EXTRA_PREFIXES). An "auto" accumulator is chosen here from free memory."""
    from tacq.circuit.accumulators import choose_accumulator

    progress = progress or no_progress
    kinds = kinds or cfg.kinds
    if not cfg.resolved:
        shape = max((tuple(b.input_ids.shape) for b in batches), default=(1, 1))
        cfg = choose_accumulator(model, cfg, len(kinds), shape)
    linears = quantizable_linears(model)
    device = input_device(model)
    acc = _Accumulator(linears, cfg, kinds)
    what = "gradients" if "abs" in kinds else "gradients (Σg², Σg)"
    handles = _attach_hooks(model, linears, acc)
    t0, n_samples, n_tokens, loss_sum = time.perf_counter(), 0, 0, 0.0
    try:
        for i, batch in enumerate(batches):
            progress(i / len(batches), f"{what}: batch {i + 1}/{len(batches)}")
            ids = batch.input_ids.to(device)
            with torch.enable_grad():
                try:
                    logits = model(
                        input_ids=ids,
                        attention_mask=batch.attention_mask.to(device),
                        use_cache=False,
                    ).logits
                    losses = per_sample_loss(logits, ids, batch.loss_mask.to(device))
                    losses.sum().backward()
                except torch.OutOfMemoryError as e:
                    raise TacqError(
                        "Out of memory while collecting gradients; lower the batch "
                        "size or the max length."
                    ) from e
            n_samples += len(losses)
            n_tokens += int(batch.loss_mask[:, 1:].sum())
            loss_sum += float(losses.detach().sum())
            del logits, losses
    finally:
        for h in handles:
            h.remove()
    progress(1.0, f"{what}: done")
    cpu = lambda d: {k: v.cpu() for k, v in d.items()}  # noqa: E731  (kept in its dtype)
    return GradStats(
        cpu(acc.abs),
        cpu(acc.sq),
        cpu(acc.sum),
        n_samples,
        n_tokens,
        loss_sum / max(n_samples, 1),
        False,
        time.perf_counter() - t0,
        cfg.accumulator,
    )


def abs_grads_loop(model: nn.Module, batches: list[Batch]) -> dict[str, Tensor]:
    """Reference way (official code): one sample at a time with autograd on the weights."""
    linears = quantizable_linears(model)
    G = {n: torch.zeros_like(m.weight, dtype=torch.float32) for n, m in linears.items()}
    for lin in linears.values():
        lin.weight.requires_grad_(True)
    try:
        for batch in batches:
            for b in range(batch.input_ids.shape[0]):
                n = int(batch.attention_mask[b].sum())
                ids = batch.input_ids[b : b + 1, :n].to(G[next(iter(G))].device)
                with torch.enable_grad():
                    logits = model(input_ids=ids, use_cache=False).logits
                    per_sample_loss(
                        logits, ids, batch.loss_mask[b : b + 1, :n].to(ids.device)
                    ).sum().backward()
                for name, lin in linears.items():
                    G[name] += lin.weight.grad.float().abs()
                    lin.weight.grad = None
    finally:
        for lin in linears.values():
            lin.weight.requires_grad_(False)
            lin.weight.grad = None
    return {k: v.cpu() for k, v in G.items()}


# ---------------------------------------------------------------- cache


def grads_cache_path(key: str) -> Path:
    return tacq_home() / "grads" / f"{key[:32]}.safetensors"


def grads_key(
    model_fingerprint: str, data_digest: str, data_cfg: object, cfg: GradientConfig
) -> str:
    """Cache key over model, examples and every option that changes the sums. Where they
    were summed (accum_device) changes nothing: fp32 adds the same on host and device."""
    opts = {k: v for k, v in asdict(cfg).items() if k != "accum_device"}
    return cache_key("grads", model_fingerprint, data_digest, asdict(data_cfg), opts)


def extra_key(key: str) -> str:
    """Key of the second pass (Σg², Σg) of the run keyed `key`."""
    return cache_key("grads-extra", key)


def save_stats(path: Path, key: str, stats: GradStats) -> None:
    tensors = {f"abs.{k}": v for k, v in stats.abs_grad.items()}
    tensors |= {f"sq.{k}": v for k, v in stats.sq_grad.items()}
    tensors |= {f"sum.{k}": v for k, v in stats.sum_grad.items()}
    meta = {
        "key": key,
        "n_samples": str(stats.n_samples),
        "n_tokens": str(stats.n_tokens),
        "mean_loss": repr(stats.mean_loss),
        "seconds": repr(stats.seconds),
        "accumulator": stats.accumulator,
    }
    save_atomic(path, tensors, meta)


def load_stats(
    path: Path, key: str, names: list[str], prefixes: tuple[str, ...] = ("abs",)
) -> GradStats | None:
    """A cached GradStats if whole (every prefix for every layer name), else None."""
    tensors = load_checked(path, key)
    if tensors is None:
        return None
    wanted = [f"{p}.{n}" for p in prefixes for n in names]
    if any(w not in tensors for w in wanted):
        log.warning("Cache file %s lacks some layers; recomputing.", path)
        path.unlink(missing_ok=True)
        return None
    meta = read_meta(path)
    pick = lambda p: {n: tensors[f"{p}.{n}"] for n in names if f"{p}.{n}" in tensors}  # noqa: E731
    return GradStats(
        pick("abs"),
        pick("sq"),
        pick("sum"),
        int(meta["n_samples"]),
        int(meta["n_tokens"]),
        float(meta["mean_loss"]),
        True,
        0.0,
        meta.get("accumulator", ""),
    )


def cache_key_and_path(key: str, cfg: GradientConfig, kinds: tuple[str, ...]) -> tuple[str, Path]:
    """The cache key and file of a pass summing `kinds`: a second pass (kinds other than
    the run's own) has its own key."""
    key = extra_key(key) if kinds != cfg.kinds else key
    return key, grads_cache_path(key)


def collect_cached(
    model: nn.Module,
    batches: list[Batch],
    cfg: GradientConfig,
    key: str,
    progress: Progress | None = None,
    kinds: tuple[str, ...] | None = None,
) -> GradStats:
    """collect_abs_grads with a safetensors cache keyed by `key`: a hit skips the work.
    kinds=EXTRA_PREFIXES: the second pass of the run keyed `key` (its own file).

    A fresh result is saved, then read back from the file: the study then holds the
    cache's zero-copy view, not a second full-size copy in memory. Under torchrun,
    tacq.circuit.distributed.collect_cached_distributed takes this one's place.
    """
    kinds = kinds or cfg.kinds
    key, path = cache_key_and_path(key, cfg, kinds)
    names = list(quantizable_linears(model))
    stats = load_stats(path, key, names, kinds)
    if stats is not None:
        (progress or no_progress)(1.0, "gradients: loaded from cache")
        return stats
    stats = collect_abs_grads(model, batches, cfg, progress, kinds)
    save_stats(path, key, stats)
    seconds = stats.seconds
    del stats  # freed before the file is mapped: the sums never exist twice
    saved = load_stats(path, key, names, kinds)
    if saved is None:  # the disk dropped what it just took: collect again, uncached
        return collect_abs_grads(model, batches, cfg, progress, kinds)
    saved.from_cache, saved.seconds = False, seconds
    return saved
