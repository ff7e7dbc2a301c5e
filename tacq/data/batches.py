"""Examples to tokens: the prompt as the model sees it (completion or chat template), the
answer span to score, and padded batches with their attention and loss masks.

One place for tokenization, so gradients, Hessians, evaluation and every fit read the same
tokens for the same example.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from tacq.data.tasks import DataConfig, Example
from tacq.errors import TacqError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    input_ids: tuple[int, ...]
    answer_start: int  # index of the first answer token in input_ids


def prompt_text(tokenizer, prompt: str, style: str) -> str:
    """The text the model sees before the answer: chat-templated or raw."""
    if style == "chat" and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    return prompt


def encode_prompt(tokenizer, prompt: str, style: str) -> list[int]:
    """Token ids of the prompt part (chat text already carries its special tokens)."""
    text = prompt_text(tokenizer, prompt, style)
    chat = style == "chat" and getattr(tokenizer, "chat_template", None)
    return list(tokenizer(text, add_special_tokens=not chat)["input_ids"])


def encode_example(
    tokenizer, ex: Example, style: str, max_length: int
) -> tuple[Encoded, str | None]:
    """Tokenize prompt and answer; cut the prompt from the left if too long (with a warning)."""
    p = encode_prompt(tokenizer, ex.prompt, style) if ex.prompt else []
    answer = ex.answer + (tokenizer.eos_token or "" if style == "chat" else "")
    a = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if not p and not a:
        raise TacqError("An example tokenizes to nothing; give some text.")
    warning = None
    if len(p) + len(a) > max_length:
        warning = f"example of {len(p) + len(a)} tokens cut to {max_length}"
        a = a[: max_length - 1] if len(a) >= max_length else a
        p = p[len(p) - (max_length - len(a)) :] if max_length > len(a) else []
    if not p:  # a plain text example: the first token has no prediction, so it is context
        p, a = a[:1], a[1:]
    return Encoded(tuple(p + a), len(p)), warning


def encode_all(tokenizer, examples, style: str, cfg: DataConfig) -> list[Encoded]:
    """Encode examples, logging one summary warning for all truncations."""
    if not examples:
        raise TacqError("No examples given: add at least one prompt/answer pair.")
    out, cut = [], 0
    for ex in examples:
        enc, warning = encode_example(tokenizer, ex, style, cfg.max_length)
        cut += warning is not None
        out.append(enc)
    if cut:
        log.warning(
            "%d example(s) longer than %d tokens were cut from the left.", cut, cfg.max_length
        )
    return out


@dataclass
class Batch:
    input_ids: Tensor  # (B, T) int64, right-padded
    attention_mask: Tensor  # (B, T) 1 for real tokens
    loss_mask: Tensor  # (B, T) bool: position t is a target predicted from t-1

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


def make_batches(
    encoded: list[Encoded],
    batch_size: int,
    pad_id: int,
    answer_only: bool = False,
    by_length: bool = False,
) -> list[Batch]:
    """Right-padded batches; with answer_only the loss covers the answer tokens only.

    by_length groups examples of similar length (stable sort) so batches carry little
    padding: for consumers that only sum over examples (gradients, Hessians). Off, the
    batches keep the examples' order (evaluation lines results up with examples).
    """
    if by_length:
        encoded = sorted(encoded, key=lambda e: len(e.input_ids))
    batches = []
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i : i + batch_size]
        T = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), T), pad_id, dtype=torch.long)
        att = torch.zeros((len(chunk), T), dtype=torch.long)
        lm = torch.zeros((len(chunk), T), dtype=torch.bool)
        for b, e in enumerate(chunk):
            n = len(e.input_ids)
            ids[b, :n] = torch.tensor(e.input_ids)
            att[b, :n] = 1
            lm[b, (e.answer_start if answer_only else 1) : n] = True
        batches.append(Batch(ids, att, lm))
    return batches
