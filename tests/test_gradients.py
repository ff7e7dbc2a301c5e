"""Batched per-sample |grad| must equal the batch-size-1 autograd loop."""

from __future__ import annotations

import pytest
import torch

from tacq.circuit.gradients import GradientConfig, abs_grads_loop, collect_abs_grads, collect_cached
from tacq.data.batches import Encoded, make_batches
from tacq.errors import TacqError
from tacq.models import quantizable_linears


def _encoded(lengths, answer_start=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        Encoded(tuple(torch.randint(3, 128, (n,), generator=g).tolist()), answer_start)
        for n in lengths
    ]


@pytest.mark.parametrize("answer_only", [False, True])
def test_batched_equals_loop_with_padding(tiny_llama, answer_only):
    enc = _encoded([9, 17, 5, 12, 17, 8])  # unequal lengths: padded batches
    batches = make_batches(enc, batch_size=4, pad_id=0, answer_only=answer_only)
    assert batches[0].attention_mask.min() == 0  # really padded
    stats = collect_abs_grads(tiny_llama, batches, GradientConfig(batch_size=4))
    ref = abs_grads_loop(tiny_llama, batches)
    assert set(stats.abs_grad) == set(quantizable_linears(tiny_llama)) == set(ref)
    for name, G in ref.items():
        assert G.abs().max() > 0
        torch.testing.assert_close(stats.abs_grad[name], G, rtol=1e-4, atol=1e-7)
    assert stats.n_samples == 6


def test_abs_of_sum_differs_from_sum_of_abs(tiny_llama):
    """G is sum |g_s|, not |sum g_s|: with several samples the two must differ."""
    batches = make_batches(_encoded([10, 10, 10]), 3, 0)
    stats = collect_abs_grads(tiny_llama, batches, GradientConfig(extra_stats=True))
    name = next(iter(stats.abs_grad))
    assert torch.all(stats.abs_grad[name] >= stats.sum_grad[name].abs() - 1e-6)
    assert (stats.abs_grad[name] - stats.sum_grad[name].abs()).max() > 1e-6
    # Fisher: sum of squares is at most (sum of abs)^2
    assert torch.all(stats.sq_grad[name] <= stats.abs_grad[name] ** 2 + 1e-9)


def test_cache_hit_and_truncated_file(tiny_llama, tmp_path):
    batches = make_batches(_encoded([8, 11]), 2, 0)
    cfg = GradientConfig()
    first = collect_cached(tiny_llama, batches, cfg, key="k1")
    second = collect_cached(tiny_llama, batches, cfg, key="k1")
    assert not first.from_cache and second.from_cache
    name = next(iter(first.abs_grad))
    assert torch.equal(first.abs_grad[name], second.abs_grad[name])
    from tacq.circuit.gradients import grads_cache_path

    path = grads_cache_path("k1")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a crash mid-write, by hand
    third = collect_cached(tiny_llama, batches, cfg, key="k1")
    assert not third.from_cache
    torch.testing.assert_close(third.abs_grad[name], first.abs_grad[name])


def test_low_memory_accumulators(tiny_llama):
    """cpu accumulators are exact; bf16 ones are close (top-k overlap is measured in bench/)."""
    batches = make_batches(_encoded([9, 17, 5, 12]), 2, 0)
    exact = collect_abs_grads(tiny_llama, batches, GradientConfig())
    on_cpu = collect_abs_grads(tiny_llama, batches, GradientConfig(accum_device="cpu"))
    half = collect_abs_grads(tiny_llama, batches, GradientConfig(accum_dtype="bfloat16"))
    assert exact.accumulator == "fp32 sums on the model's device"
    assert half.accumulator == "bf16 sums on the model's device"
    for name, G in exact.abs_grad.items():
        assert torch.equal(on_cpu.abs_grad[name], G)
        assert half.abs_grad[name].dtype == torch.bfloat16  # kept as summed: half the bytes
        assert not torch.equal(half.abs_grad[name].float(), G)  # really rounded
        torch.testing.assert_close(half.abs_grad[name].float(), G, rtol=2e-2, atol=1e-6)
    with pytest.raises(TacqError, match="float32 or bfloat16"):
        GradientConfig(accum_dtype="float16")


def test_flipped_byte_in_cache_is_caught(tiny_llama):
    """A whole-looking file with one changed byte fails the checksum and is recomputed."""
    from tacq.circuit.gradients import grads_cache_path

    batches = make_batches(_encoded([8, 11]), 2, 0)
    first = collect_cached(tiny_llama, batches, GradientConfig(), key="k2")
    path = grads_cache_path("k2")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor's bytes; the header is untouched
    path.write_bytes(bytes(data))
    again = collect_cached(tiny_llama, batches, GradientConfig(), key="k2")
    assert not again.from_cache
    name = next(iter(first.abs_grad))
    assert torch.equal(again.abs_grad[name], first.abs_grad[name])
