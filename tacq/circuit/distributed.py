"""Data-parallel gradient collection with torch.distributed (started by torchrun).

Each rank takes every world_size-th batch, accumulates its per-sample |grad| sums in fp32
exactly as the single-process path does, and the sums (and sample/token/loss counts) are
all-reduced once at the end. Sums of per-sample terms are order-free, so the result equals
the single-process one up to float summation order.

    torchrun --nproc-per-node 2 -m tacq gradients --task antonyms
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist

from tacq.circuit.gradients import (
    GradientConfig,
    GradStats,
    cache_key_and_path,
    collect_abs_grads,
    save_stats,
)
from tacq.data.batches import Batch
from tacq.progress import Progress


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment -> (rank, world_size)."""
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def leave_process_group(code: int = 0) -> NoReturn:
    """End this rank once its work is saved: meet the others at a barrier, then exit
    without tearing the process group down.

    Gloo's teardown (destroy_process_group, or the interpreter's exit joining its
    threads) now and then aborts the process ("terminate called without an active
    exception", SIGABRT) after every result is written: the two-process test died so in 2
    of ~8 full test runs, and once more in CI after a barrier was added before it. Past
    the barrier nobody communicates again, so the process ends here (os._exit runs no
    teardown) with `code`.
    """
    dist.barrier()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def shard(batches: list[Batch], rank: int, world: int) -> list[Batch]:
    """This rank's batches: every world-th one, starting at its rank."""
    return batches[rank::world]


def _all_reduce_(tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    """Sum each tensor over ranks in place (moved to the backend's device and back)."""
    for name in sorted(tensors):  # same order on every rank
        t = tensors[name].to(device)
        dist.all_reduce(t)
        tensors[name] = t.cpu()


def collect_abs_grads_distributed(
    model: torch.nn.Module,
    batches: list[Batch],
    cfg: GradientConfig,
    progress: Progress | None = None,
    kinds: tuple[str, ...] | None = None,
) -> GradStats:
    """collect_abs_grads over this rank's shard, then one all-reduce of every sum.

    Every rank returns the full sums. Without an initialized process group it is the
    single-process collection.
    """
    if not dist.is_initialized():
        return collect_abs_grads(model, batches, cfg, progress, kinds)
    if not cfg.resolved:  # every rank the same dtype, or the all-reduce would mix them
        cfg = replace(
            cfg,
            accum_dtype="float32" if cfg.accum_dtype == "auto" else cfg.accum_dtype,
            accum_device="model" if cfg.accum_device == "auto" else cfg.accum_device,
        )
    rank, world = dist.get_rank(), dist.get_world_size()
    stats = collect_abs_grads(model, shard(batches, rank, world), cfg, progress, kinds)
    device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    for sums in (stats.abs_grad, stats.sq_grad, stats.sum_grad):
        _all_reduce_(sums, device)
    counts = torch.tensor(
        [stats.n_samples, stats.n_tokens, stats.mean_loss * stats.n_samples, stats.seconds],
        dtype=torch.float64,
        device=device,
    )
    dist.all_reduce(counts)
    n_samples = int(counts[0])
    stats.n_samples, stats.n_tokens = n_samples, int(counts[1])
    stats.mean_loss = float(counts[2]) / max(n_samples, 1)
    stats.seconds = float(counts[3]) / world  # mean wall time per rank
    return stats


def in_process_group() -> bool:
    """Whether this process is one rank of an initialized torch.distributed group."""
    return dist.is_available() and dist.is_initialized()


def collect_cached_distributed(
    model: torch.nn.Module,
    batches: list[Batch],
    cfg: GradientConfig,
    key: str,
    progress: Progress | None = None,
    kinds: tuple[str, ...] | None = None,
) -> GradStats:
    """tacq.circuit.gradients.collect_cached under torchrun: every rank computes its shard and no
    rank reads the cache (so none can skip the all-reduce); rank 0 writes it for later
    single-process runs."""
    kinds = kinds or cfg.kinds
    key, path = cache_key_and_path(key, cfg, kinds)
    stats = collect_abs_grads_distributed(model, batches, cfg, progress, kinds)
    if dist.get_rank() == 0:
        save_stats(path, key, stats)
    return stats
