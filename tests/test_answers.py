"""One prompt pass per batch gives the same NLLs, log-probs and greedy answers as two."""

from __future__ import annotations

import pytest
import torch

from tacq.data.batches import encode_all, make_batches
from tacq.data.tasks import DataConfig, Example
from tacq.eval.answers import score_and_generate
from tacq.eval.evaluate import EvalConfig, evaluate, generate_batch
from tests.conftest import _char_tokenizer
from tests.tiny import make_tiny_llama, make_tiny_phi3

WORDS = ["hot", "big", "up", "wet", "fast", "old", "new", "tall", "low", "dark", "soft"]


def _examples() -> list[Example]:
    """Prompts of different lengths (1 to 3 demonstrations) so every batch is padded."""
    out = []
    for i, w in enumerate(WORDS):
        shots = "".join(f"{x} -> {x[::-1]}\n" for x in WORDS[: 1 + i % 3])
        out.append(Example(f"{shots}{w} ->", f" {w[::-1]}" + "x" * (i % 4)))
    return out


def naive_answer_logprobs(model, tok, examples, style, batch_size):
    """The plain way: prompt + answer right-padded, one forward, logits everywhere."""
    enc = encode_all(tok, examples, style, DataConfig(max_length=256))
    nlls, logps = [], []
    for batch in make_batches(enc, batch_size, tok.pad_token_id, answer_only=True):
        with torch.no_grad():
            logits = model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
            ).logits
        lp = torch.log_softmax(logits[:, :-1].float(), -1)
        for b in range(lp.shape[0]):
            pos = batch.loss_mask[b, 1:].nonzero().squeeze(1)
            rows = lp[b, pos]
            nlls.append(float(-rows.gather(1, batch.input_ids[b, 1:][pos][:, None]).mean()))
            logps.append(rows)
    return nlls, logps


@pytest.mark.parametrize("make", [make_tiny_llama, make_tiny_phi3], ids=["llama", "phi3"])
@pytest.mark.parametrize("style", ["completion", "chat"])
def test_one_pass_equals_the_two_separate_passes(make, style):
    model, tok = make(), _char_tokenizer()
    ex = _examples()
    got = score_and_generate(model, tok, ex, style, max_new_tokens=7, batch_size=4)
    nlls, logps = naive_answer_logprobs(model, tok, ex, style, 4)
    greedy = generate_batch(model, tok, [e.prompt for e in ex], style, 7, batch_size=4)
    assert got.nlls == pytest.approx(nlls, abs=1e-4)
    for a, b in zip(got.logprobs, logps):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert got.greedy == greedy


def test_evaluate_runs_each_prompt_once(tiny_lm, tiny_task):
    """The embedding sees each batch's prompts once; the rest are answer or new tokens."""
    ex = _examples()
    seen: list[tuple[int, int]] = []
    emb = tiny_lm.model.get_input_embeddings()
    hook = emb.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        evaluate(tiny_lm.model, tiny_lm.tokenizer, ex, "completion", "t", EvalConfig(4))
    finally:
        hook.remove()
    longest_answer = max(len(e.answer) for e in ex)  # one token per character
    prompt_passes = [s for s in seen if s[1] > longest_answer + 10]
    assert len(prompt_passes) == 3  # 11 examples in batches of 4
    assert [s[0] for s in prompt_passes] == [4, 4, 3]
