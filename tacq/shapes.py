"""A decoder's shapes from its config alone, and what a gradient pass needs beside them.

The base of every memory estimate: `tacq plan` adds the stages up from these, and the
gradient pass sizes its accumulators with them, before any weight is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shapes:
    vocab: int
    hidden: int
    inter: int
    layers: int
    kv_dim: int
    tied: bool

    @classmethod
    def from_config(cls, c: dict) -> Shapes:
        heads = c["num_attention_heads"]
        head_dim = c.get("head_dim") or c["hidden_size"] // heads
        return cls(
            c["vocab_size"],
            c["hidden_size"],
            c["intermediate_size"],
            c["num_hidden_layers"],
            c.get("num_key_value_heads", heads) * head_dim,
            bool(c.get("tie_word_embeddings", False)),
        )

    def linears(self) -> list[tuple[str, int, int]]:
        """(module, out, in) of one block's quantizable Linears."""
        h, kv, i = self.hidden, self.kv_dim, self.inter
        return [
            ("q", h, h),
            ("k", kv, h),
            ("v", kv, h),
            ("o", h, h),
            ("gate", i, h),
            ("up", i, h),
            ("down", h, i),
        ]

    @property
    def quantizable(self) -> int:
        return self.layers * sum(o * i for _, o, i in self.linears())

    @property
    def params(self) -> int:
        emb = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.quantizable + emb + self.layers * 2 * self.hidden + self.hidden


def gradient_working_bytes(s: Shapes, batch_size: int, max_length: int, dtype_bytes: int) -> int:
    """A gradient pass's memory beside the weights and sums: activations saved for backward,
    logits (fp32 logits, their log-softmax and grad) and one sample's (out, in) gradient
    with its temporaries."""
    bt = batch_size * max_length
    acts = bt * s.layers * (8 * s.hidden + 2 * s.kv_dim + 3 * s.inter) * dtype_bytes
    logits = bt * s.vocab * 4 * 3
    per_sample = 3 * max(o * i for _, o, i in s.linears()) * 4  # one sample's dW and temps
    return acts + logits + per_sample
