"""Large-model scaling on one GPU: a random-weight model with Llama-3-8B's shapes, in bf16.

No download: the model is built from a config with random weights (the timings and memory
of gradient collection and GPTQ do not depend on the weights' values). Measures
  - gradient collection (batched per-sample |grad|, fp32 sums of |g| only, as TaCQ needs):
    seconds per 1k tokens over a few batches of `--seq` tokens,
  - GPTQ: seconds per decoder block for the first `--gptq-blocks` blocks (true-sequential,
    every Linear of the block), with `--calib` x `--seq` calibration tokens,
  - peak GPU memory of each,
then extrapolates the full run (128 x 2048 tokens, all blocks, reference + masked GPTQ).

    python bench/large_gpu.py                    # on a CUDA machine
    python bench/large_gpu.py --tiny --device cpu  # a small shape, to check the script runs
Writes bench/results/large_gpu.json (or large_gpu_tiny.json).
"""

from __future__ import annotations

import argparse
import time

from _common import write_result


def build(tiny: bool, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tacq.study.plan import PRESETS

    shape = dict(PRESETS["llama-3-8b"])
    shape.pop("model_type")
    if tiny:
        shape.update(
            vocab_size=1024,
            hidden_size=256,
            intermediate_size=896,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=2,
        )
    cfg = LlamaConfig(**shape, max_position_embeddings=4096)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model = model.to_empty(device=device).to(dtype)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0, 0.02)
    # rotary buffers are computed, not loaded: rebuild them off the meta device
    model.model.rotary_emb = type(model.model.rotary_emb)(config=cfg).to(device)
    model.eval().requires_grad_(False)
    return model, cfg


def batches_of(n: int, seq: int, batch: int, vocab: int):
    import torch

    from tacq.data.batches import Batch

    g = torch.Generator().manual_seed(1)
    out = []
    for s in range(0, n, batch):
        b = min(batch, n - s)
        ids = torch.randint(0, vocab, (b, seq), generator=g)
        ones = torch.ones(b, seq, dtype=torch.long)
        out.append(Batch(ids, ones, ones.bool()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="small shapes (script check)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--grad-batches", type=int, default=4, help="batches of 1 x seq to time")
    ap.add_argument("--calib", type=int, default=128, help="calibration sequences for GPTQ")
    ap.add_argument("--gptq-blocks", type=int, default=2)
    ap.add_argument("--full-examples", type=int, default=128)
    args = ap.parse_args()

    import torch

    from tacq.circuit.gradients import GradientConfig, collect_abs_grads
    from tacq.formats.grid import GPTQConfig
    from tacq.quant.quantize import quantize_model

    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dtype = torch.bfloat16 if cuda else torch.float32
    model, cfg = build(args.tiny, args.device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {n_params / 1e9:.2f} B parameters, {cfg.num_hidden_layers} blocks, {dtype}, "
        f"{args.device}"
    )

    # Gradients: |g| sums only (what TaCQ needs), fp32 accumulators on the device.
    gcfg = GradientConfig(batch_size=1, extra_stats=False)
    warm = batches_of(1, min(args.seq, 256), 1, cfg.vocab_size)
    collect_abs_grads(model, warm, gcfg)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    grad_batches = batches_of(args.grad_batches, args.seq, 1, cfg.vocab_size)
    sync()
    t = time.perf_counter()
    collect_abs_grads(model, grad_batches, gcfg)
    sync()
    t_grad = time.perf_counter() - t
    tokens = args.grad_batches * args.seq
    grad_per_1k = t_grad / tokens * 1000
    grad_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    full_tokens = args.full_examples * args.seq
    print(
        f"gradients: {grad_per_1k:.3f} s per 1k tokens, peak {grad_peak:.1f} GB; "
        f"{full_tokens} tokens -> {grad_per_1k * full_tokens / 1000 / 60:.1f} min"
    )

    # GPTQ on the first blocks only: drop the rest so the run is short.
    blocks = model.model.layers
    n_blocks = len(blocks)
    model.model.layers = blocks[: args.gptq_blocks]
    model.config.num_hidden_layers = args.gptq_blocks
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    calib = batches_of(args.calib, args.seq, 8, cfg.vocab_size)
    sync()
    t = time.perf_counter()
    res = quantize_model(model, calib, GPTQConfig(bits=2), in_place=True)
    sync()
    t_gptq = time.perf_counter() - t
    per_block = t_gptq / args.gptq_blocks
    gptq_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    per_linear = {n.rsplit(".", 1)[-1]: s for n, s in res.layer_seconds.items()}
    gptq_full = 2 * per_block * n_blocks  # reference (for dW) + masked
    total = grad_per_1k * full_tokens / 1000 + gptq_full
    print(
        f"GPTQ: {per_block:.1f} s per block ({args.calib} x {args.seq} tokens), peak "
        f"{gptq_peak:.1f} GB; reference + masked over {n_blocks} blocks -> "
        f"{gptq_full / 60:.1f} min"
    )
    print(
        f"whole pipeline (extrapolated): {total / 60:.1f} min; target < 30 min, < 60 GB; "
        f"official code: 3.3 h, 93 GB on an A6000"
    )
    write_result(
        "large_gpu_tiny" if args.tiny else "large_gpu",
        {
            "shape": "tiny" if args.tiny else "llama-3-8b",
            "params": n_params,
            "dtype": str(dtype),
            "grad_s_per_1k_tokens": grad_per_1k,
            "grad_peak_gb": grad_peak,
            "gptq_s_per_block": per_block,
            "gptq_calib_tokens": args.calib * args.seq,
            "gptq_peak_gb": gptq_peak,
            "gptq_s_per_linear_last_block": per_linear,
            "extrapolated_grad_min": grad_per_1k * full_tokens / 1000 / 60,
            "extrapolated_gptq_min": gptq_full / 60,
            "extrapolated_total_min": total / 60,
            "targets": {"total_min": 30, "peak_gb": 60},
        },
    )


if __name__ == "__main__":
    main()
