"""Answer NLL and greedy answers from one prompt pass per batch.

Why: evaluation needs both the log-probs of the reference answer (NLL, KL) and the
model's own greedy answer (exact match). Run separately, the prompt - most of each
example's tokens (few-shot demonstrations) - goes through the model twice. Here each
batch's prompts are run once into a KV cache; a copy of that cache scores the answer
tokens, the cache itself continues greedily. Same tokens, same positions and the same
attention as the two separate passes (prompts left-padded, positions counted from each
row's first real token), so the numbers agree to float rounding.
"""

from __future__ import annotations

import copy
import functools
import inspect
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tacq.data.batches import encode_all
from tacq.data.tasks import DataConfig, Example
from tacq.errors import TacqError
from tacq.models import input_device


@dataclass
class Answers:
    nlls: list[float]  # per example: mean NLL of its answer tokens
    logprobs: list[Tensor]  # per example: (answer tokens, vocab) log-probs
    greedy: list[str]  # per example: the greedy continuation, decoded without specials


def answer_line_ended(text: str) -> bool:
    """A completion-style answer is one line: it has ended once a line break follows text."""
    return "\n" in text.lstrip()


def _eos_ids(model: nn.Module, tokenizer) -> set[int]:
    """End-of-sequence ids, as generate() stops on them: the tokenizer's and the config's."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None)
    ids |= set(extra) if isinstance(extra, (list, tuple)) else {extra}
    return {int(i) for i in ids if i is not None}


def _left_padded(rows: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (T - len(r)) + r for r in rows])
    att = torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    return ids, att


def _right_padded(rows: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (T - len(r)) for r in rows])
    att = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    return ids, att


@functools.lru_cache
def _cache_arg(model_class: type) -> str:
    """The forward's name for the KV cache: `cache` from transformers 5.24 on (where
    `past_key_values` is deprecated), `past_key_values` before. Once per model class: it
    is asked at every decoding step."""
    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _step(model: nn.Module, ids: Tensor, att: Tensor, pos: Tensor, cache, keep: int = 0):
    """One forward extending `cache`; logits of the last `keep` positions (0: all)."""
    kwargs = {_cache_arg(type(model)): cache}
    return model(
        input_ids=ids,
        attention_mask=att,
        position_ids=pos,
        use_cache=True,
        logits_to_keep=keep,
        **kwargs,
    ).logits


def score_and_generate(
    model: nn.Module,
    tokenizer,
    examples: list[Example],
    style: str,
    max_new_tokens: int,
    batch_size: int = 16,
    max_length: int = 256,
) -> Answers:
    """Answer NLL, answer log-probs and greedy answers, with one prompt pass per batch.

    Completion-style greedy answers stop at the end of their line (exact match reads only
    that line); every answer stops at the end-of-sequence token or after max_new_tokens.
    """
    from transformers import DynamicCache

    enc = encode_all(tokenizer, examples, style, DataConfig(max_length=max_length))
    pad = tokenizer.pad_token_id or 0
    eos = _eos_ids(model, tokenizer)
    device = input_device(model)
    out = Answers([], [], [])
    for i in range(0, len(enc), batch_size):
        chunk = enc[i : i + batch_size]
        prompts = [list(e.input_ids[: e.answer_start]) for e in chunk]
        answers = [list(e.input_ids[e.answer_start :]) for e in chunk]
        if any(not a for a in answers):
            raise TacqError("An evaluation example has no answer tokens; give an answer.")
        p_ids, p_att = _left_padded(prompts, pad)
        a_ids, a_att = _right_padded(answers, pad)
        p_ids, p_att, a_ids, a_att = (t.to(device) for t in (p_ids, p_att, a_ids, a_att))
        lens = p_att.sum(1)  # real prompt tokens per row = the position of what follows
        cache = DynamicCache()
        with torch.no_grad():
            first = _step(model, p_ids, p_att, (p_att.cumsum(1) - 1).clamp(min=0), cache, 1)
            first = first[:, -1].float()
            # The reference answer, scored on a copy of the prompt cache.
            logits = first[:, None]
            if a_ids.shape[1] > 1:
                att = torch.cat([p_att, a_att[:, :-1]], 1)
                pos = lens[:, None] + torch.arange(a_ids.shape[1] - 1, device=device)
                rest = _step(model, a_ids[:, :-1], att, pos, copy.deepcopy(cache))
                logits = torch.cat([logits, rest.float()], 1)
            lp = torch.log_softmax(logits, -1).cpu()
            for b, a in enumerate(answers):
                rows = lp[b, : len(a)]
                out.nlls.append(float(-rows.gather(1, torch.tensor(a)[:, None]).mean()))
                out.logprobs.append(rows)
            out.greedy += _greedy(
                model, tokenizer, first, p_att, lens, cache, style, eos, max_new_tokens
            )
    return out


def _greedy(
    model: nn.Module,
    tokenizer,
    first: Tensor,
    att: Tensor,
    lens: Tensor,
    cache,
    style: str,
    eos: set[int],
    max_new_tokens: int,
) -> list[str]:
    """Greedy continuation from the prompt cache; each row ends at its own stop."""
    B = first.shape[0]
    nxt = first.argmax(-1)
    tokens: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    for step in range(max_new_tokens):
        for b in range(B):
            if not done[b]:
                tokens[b].append(int(nxt[b]))
                text = tokenizer.decode(tokens[b], skip_special_tokens=True)
                done[b] = int(nxt[b]) in eos or (style == "completion" and answer_line_ended(text))
        if all(done) or step == max_new_tokens - 1:
            break
        att = torch.cat([att, torch.ones_like(att[:, :1])], 1)
        pos = (lens + step)[:, None]
        nxt = _step(model, nxt[:, None], att, pos, cache, 1)[:, -1].argmax(-1)
    return [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
