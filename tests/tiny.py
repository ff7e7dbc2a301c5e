"""The seeded tiny random models, importable by fixtures and by spawned test processes."""

from __future__ import annotations

import torch

# 2 layers, hidden 64, GQA 4/2 heads, vocab 128 (fits the char tokenizer of conftest)
TINY_SIZES = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    tie_word_embeddings=False,
)


def _frozen(model):
    model.eval().requires_grad_(False)
    return model


def fp16_exact(model):
    """Round every parameter through fp16 in place, as a packed export stores the tensors
    it does not quantize: a variant shares the model's own, so only then is a reloaded
    export identical to the in-memory variant to the last bit."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().to(p.dtype))
    return model


def make_tiny_llama(seed: int = 0):
    """The tiny Llama: fp32, eval mode, frozen."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return _frozen(LlamaForCausalLM(LlamaConfig(**TINY_SIZES)))


def make_tiny_phi3(seed: int = 0):
    """The tiny Phi-3: the same sizes, with fused qkv_proj and gate_up_proj."""
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(seed)
    return _frozen(Phi3ForCausalLM(Phi3Config(**TINY_SIZES, pad_token_id=2)))
