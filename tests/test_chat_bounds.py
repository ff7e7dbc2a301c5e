"""The chat refuses oversized input before tokenizing it, and sends a completion-style
task's prompt raw, exactly as evaluation and the demo's gallery do."""

from __future__ import annotations

import pytest

from tacq.errors import TacqError

TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


class NoTokenizer:
    """Fails the test if anything is tokenized."""

    chat_template = TEMPLATE
    pad_token_id = 0

    def __call__(self, *args, **kwargs):
        raise AssertionError("tokenized")

    def apply_chat_template(self, *args, **kwargs):
        raise AssertionError("templated")


def test_a_4mb_prompt_is_refused_before_tokenizing(tiny_llama):
    from app.chat_stream import stream_chat

    with pytest.raises(TacqError, match=r"4,000,000 characters.*at most 20,000"):
        next(stream_chat(tiny_llama, NoTokenizer(), [{"role": "user", "content": "x" * 4_000_000}]))


def test_a_history_over_100k_characters_is_refused(tiny_llama):
    from app.chat_stream import check_chat_size, stream_chat

    turns = ["user", "assistant"] * 3
    history = [{"role": r, "content": "y" * 16_667} for r in turns[:5]]
    history.append({"role": "user", "content": "y" * (100_001 - 5 * 16_667)})
    assert sum(len(m["content"]) for m in history) == 100_001
    with pytest.raises(TacqError, match=r"100,001 characters.*at most 100,000.*Clear the chat"):
        next(stream_chat(tiny_llama, NoTokenizer(), history))
    history[-1]["content"] = history[-1]["content"][1:]
    check_chat_size(history)  # 100,000 characters: allowed


def _user():
    from pathlib import Path

    from app.state import UserState

    return UserState("a" * 32, Path("/nonexistent"))


class NoRegistry:
    def get(self, *args, **kwargs):
        raise AssertionError("a model was asked for")


def test_the_chat_tab_refuses_oversized_input_first():
    """The handler checks sizes before it asks for a model (and so before any tokenizing)."""
    import gradio as gr

    from app.chat_tab import FP, send_handler

    send = send_handler(NoRegistry())
    empty = [[], [], []]
    with pytest.raises(gr.Error, match=r"at most 20,000 characters"):
        next(send(_user(), "x" * 4_000_000, 0.0, 16, FP, None, None, *empty, "chat"))
    long = [{"role": "user", "content": "z" * 19_000}, {"role": "assistant", "content": "ok"}]
    bots = [long * 6, [], []]  # 114,012 characters in column 0
    with pytest.raises(gr.Error, match=r"at most 100,000 characters.*Clear the chat"):
        next(send(_user(), "hi", 0.0, 16, FP, None, None, *bots, "chat"))


def _tokenizer_with_template(tiny_lm):
    tok = tiny_lm.tokenizer
    tok.chat_template = TEMPLATE
    return tok


def _fed(model, tokenizer, messages, style) -> tuple[list[int], list[str]]:
    """The prompt ids stream_chat hands to generate(), and its stopping criteria."""
    from app.chat_stream import stream_chat

    seen = []
    original = model.generate

    def spy(**kwargs):
        stops = [type(c).__name__ for c in kwargs["stopping_criteria"]]
        seen.append((kwargs["input_ids"][0].tolist(), stops))
        return original(**kwargs)

    model.generate = spy
    try:
        list(stream_chat(model, tokenizer, messages, 4, style=style))
    finally:
        del model.generate
    return seen[0]


def test_completion_chat_sends_the_raw_prompt_as_the_gallery_does(tiny_lm, tiny_task):
    from tacq.data.batches import encode_all
    from tacq.data.tasks import DataConfig

    tok = _tokenizer_with_template(tiny_lm)
    ex = tiny_task.heldout[0]
    (enc,) = encode_all(tok, [ex], "completion", DataConfig())
    gallery_ids = list(enc.input_ids[: enc.answer_start])  # what score_and_generate feeds
    fed, stops = _fed(tiny_lm.model, tok, [{"role": "user", "content": ex.prompt}], "completion")
    assert fed == gallery_ids == tok(ex.prompt)["input_ids"]
    assert "LineEnd" in stops  # one answer line, as exact match and the gallery read it

    # a multi-turn history: the last user message, raw
    turns = [
        {"role": "user", "content": "hot ->"},
        {"role": "assistant", "content": " toh"},
        {"role": "user", "content": ex.prompt},
    ]
    assert _fed(tiny_lm.model, tok, turns, "completion")[0] == gallery_ids

    # a chat-style task: the template, as evaluation applies it to a chat task
    chat, stops = _fed(tiny_lm.model, tok, turns[-1:], "chat")
    (enc,) = encode_all(tok, [ex], "chat", DataConfig())
    assert chat == list(enc.input_ids[: enc.answer_start]) != gallery_ids
    assert "LineEnd" not in stops
