"""Completion-style answers end at their line: in held-out generation and in the chat."""

from __future__ import annotations

import pytest
import torch

from tacq.eval.answers import answer_line_ended
from tacq.eval.evaluate import answer_line, line_end_criterion


def test_a_line_ends_only_after_text():
    assert not answer_line_ended(" cold")
    assert not answer_line_ended("\n  ")  # a leading break is not the end of an answer
    assert answer_line_ended(" cold\nbig")
    assert answer_line(" cold\nbig -> small") == " cold"
    assert answer_line("\n cold\nx") == "\n cold"
    assert answer_line(" cold") == " cold"


def test_criterion_stops_each_row_on_its_own(tiny_lm):
    tok = tiny_lm.tokenizer
    prompt = tok("hot ->", add_special_tokens=False).input_ids
    rows = [" cold\nbig", " col", "\n co"]
    ids = [prompt + tok(r, add_special_tokens=False).input_ids for r in rows]
    width = max(len(x) for x in ids)
    pad = tok.pad_token_id
    batch = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    done = line_end_criterion(tok, len(prompt))(batch, None)
    assert done.tolist() == [True, False, False]


@pytest.mark.slow
def test_smollm2_answers_stop_at_the_line_end():
    from app.chat_stream import stream_chat
    from tacq.data.reading import load_task
    from tacq.eval.evaluate import evaluate, generate_batch
    from tacq.models import load_model
    from tacq.study.demo import SUGGESTED_PROMPT

    lm = load_model("default")
    (out,) = generate_batch(lm.model, lm.tokenizer, [SUGGESTED_PROMPT], "completion", 24)
    assert out.strip() and "\n" not in out.strip(), out  # one answer, no run-on lines
    chat = [{"role": "user", "content": SUGGESTED_PROMPT}]
    one = list(stream_chat(lm.model, lm.tokenizer, chat, 48, one_line=True))[-1]
    free = list(stream_chat(lm.model, lm.tokenizer, chat, 48))[-1]
    assert "\n" not in one.strip() and free.startswith(one.rstrip())
    # exact match reads only the answer line, so stopping there changes no score
    held = list(load_task("antonyms").heldout[:8])
    res, _ = evaluate(lm.model, lm.tokenizer, held, "completion", "fp")
    assert all("\n" not in r["prediction"] for r in res.rows)
    assert res.exact_match == sum(r["correct"] for r in res.rows) / len(res.rows)
