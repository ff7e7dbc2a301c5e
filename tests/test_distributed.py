"""Data-parallel gradient collection (gloo, 2 CPU processes) equals the single process."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from tacq.circuit.gradients import GradientConfig, collect_abs_grads
from tacq.data.batches import Encoded, make_batches

LENGTHS = [9, 17, 5, 12, 17, 8, 11, 6, 14, 10]  # 5 batches of 2: ranks get 3 and 2


def _batches():
    g = torch.Generator().manual_seed(1)
    enc = [Encoded(tuple(torch.randint(3, 128, (n,), generator=g).tolist()), 3) for n in LENGTHS]
    return make_batches(enc, batch_size=2, pad_id=0)


def _worker(rank: int, world: int, out: str) -> None:
    import faulthandler

    from tacq.circuit.distributed import collect_abs_grads_distributed, leave_process_group
    from tests.tiny import make_tiny_llama

    faulthandler.enable(all_threads=True)  # an abort prints where each thread was
    torch.set_num_threads(1)
    # A file store: no TCP store server on rank 0 that could go away while rank 1 still
    # talks to it at teardown (and no port to race for).
    store = f"file://{out}/store"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world)
    try:
        stats = collect_abs_grads_distributed(
            make_tiny_llama(), _batches(), GradientConfig(extra_stats=True)
        )
    except BaseException:
        dist.destroy_process_group()
        raise
    tensors = {f"abs.{k}": v for k, v in stats.abs_grad.items()}
    tensors |= {f"sq.{k}": v for k, v in stats.sq_grad.items()}
    tensors["counts"] = torch.tensor([stats.n_samples, stats.n_tokens], dtype=torch.float64)
    tensors["loss"] = torch.tensor([stats.mean_loss], dtype=torch.float64)
    save_file(tensors, f"{out}/rank{rank}.safetensors")
    leave_process_group()  # as the CLI: barrier, then exit without gloo's teardown


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_two_process_gloo_equals_single_process(tmp_path, tiny_llama):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    single = collect_abs_grads(tiny_llama, _batches(), GradientConfig(extra_stats=True))
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    for name, G in single.abs_grad.items():
        assert G.abs().max() > 0
        for got in ranks:  # every rank holds the full sums
            torch.testing.assert_close(got[f"abs.{name}"], G, rtol=1e-5, atol=1e-8)
            torch.testing.assert_close(
                got[f"sq.{name}"], single.sq_grad[name], rtol=1e-5, atol=1e-10
            )
    assert single.n_samples == len(LENGTHS)
    assert ranks[0]["counts"].tolist() == [single.n_samples, single.n_tokens]
    assert abs(float(ranks[1]["loss"][0]) - single.mean_loss) < 1e-6


def test_shard_splits_every_batch_once():
    from tacq.circuit.distributed import shard

    batches = list(range(7))
    parts = [shard(batches, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == batches and [len(p) for p in parts] == [3, 2, 2]
