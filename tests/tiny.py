"""The seeded tiny random Llama, importable by fixtures and by spawned test processes."""

from __future__ import annotations

import torch


def make_tiny_llama(seed: int = 0):
    """2 layers, hidden 64, GQA 4/2 heads, vocab 128, fp32, eval mode, frozen."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).eval()
    model.requires_grad_(False)
    return model
