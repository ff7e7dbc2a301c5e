"""Scoring rules and evaluation on a tiny model."""

from __future__ import annotations

import pytest

from tacq.eval.evaluate import EvalConfig, evaluate, is_match, normalize


@pytest.mark.parametrize(
    ("pred", "answer", "style", "ok"),
    [
        (" cold\nbig -> small", " cold", "completion", True),
        (" Cold.", " cold", "completion", True),
        (" colder", " cold", "completion", False),
        (" cold war", " cold", "completion", False),
        ("", " cold", "completion", False),
        ('The opposite of "hot" is "cold".', "cold", "chat", True),
        ("It is scolding.", "cold", "chat", False),
        ("Paris", "paris", "chat", True),
        ("anything", "", "chat", False),
    ],
)
def test_is_match(pred, answer, style, ok):
    assert is_match(pred, answer, style) is ok


def test_normalize():
    assert normalize("  Paris! ") == "paris"


def test_evaluate_on_tiny_model(tiny_lm, tiny_task):
    held = list(tiny_task.heldout)
    fp, fp_lp = evaluate(
        tiny_lm.model, tiny_lm.tokenizer, held, "completion", "fp", EvalConfig(max_new_tokens=4)
    )
    assert len(fp.rows) == len(held) and fp.kl_to_fp is None
    assert fp.answer_nll > 0 and 0 <= fp.exact_match <= 1
    same, _ = evaluate(
        tiny_lm.model,
        tiny_lm.tokenizer,
        held,
        "completion",
        "fp2",
        EvalConfig(max_new_tokens=4),
        fp_logprobs=fp_lp,
    )
    assert same.kl_to_fp == pytest.approx(0, abs=1e-6)
    assert same.answer_nll == pytest.approx(fp.answer_nll, rel=1e-6)
    assert [r["prediction"] for r in same.rows] == [r["prediction"] for r in fp.rows]
