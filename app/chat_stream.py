"""Chat with one model or several side by side, streaming each reply as it grows.

Why in the app: streaming threads, a stop event per session and the size limits of a chat
box are the UI's concerns; the library's evaluation (tacq.eval.evaluate) scores and answers
in batches, and this module reads a reply the same way (answer_line, one line for a
completion task) so a chat answer matches the gallery's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from tacq.data.batches import encode_prompt
from tacq.errors import TacqError
from tacq.eval.evaluate import answer_line, line_end_criterion
from tacq.models import input_device

MAX_MESSAGE_CHARS = 20_000  # one chat message, as a prompt of an example (MAX_FIELD_CHARS)
MAX_HISTORY_CHARS = 100_000  # all messages of one conversation together


def check_chat_size(messages: list[dict]) -> None:
    """Refuse an oversized message or history by its characters, before any tokenizing:
    a 4 MB prompt took 21 s of CPU to tokenize only to be refused for its tokens."""
    total = 0
    for m in messages:
        n = len(m["content"])
        if n > MAX_MESSAGE_CHARS:
            raise TacqError(
                f"A chat message has {n:,} characters; one may have at most "
                f"{MAX_MESSAGE_CHARS:,} characters. Shorten it."
            )
        total += n
    if total > MAX_HISTORY_CHARS:
        raise TacqError(
            f"The conversation has {total:,} characters; it may have at most "
            f"{MAX_HISTORY_CHARS:,} characters. Clear the chat."
        )


def chat_input_ids(tokenizer, messages: list[dict], style: str = "chat") -> Tensor:
    """The prompt ids of a chat, (1, T). 'completion': the last user message raw, as
    evaluation and the demo's gallery feed a completion task's prompt (a chat template
    would stop the model continuing a few-shot pattern); 'chat': the template over the
    whole history when the tokenizer has one."""
    if style == "completion":
        last = next((m for m in reversed(messages) if m["role"] == "user"), messages[-1])
        return torch.tensor([encode_prompt(tokenizer, last["content"], "completion")])
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    return tokenizer(messages[-1]["content"], return_tensors="pt")["input_ids"]


def stream_chat(
    model: nn.Module,
    tokenizer,
    messages: list[dict],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    max_context: int = 2048,
    stop: threading.Event | None = None,
    one_line: bool = False,
    style: str = "chat",
) -> Iterator[str]:
    """Yield the growing reply to a chat (messages format).

    style: 'chat' applies the chat template; 'completion' sends the last user message raw
    and stops at the end of the reply's first line, as a completion task's answer is read
    (chat_input_ids). Sizes are checked before anything is tokenized (check_chat_size).
    Setting `stop` ends generation at the next token (a stopping criterion, so the
    generating thread really ends). one_line: stop once the reply's first line of text is
    complete (implied by 'completion').
    """
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    if style not in ("chat", "completion"):
        raise TacqError(f"Unknown prompt style {style!r}: use 'chat' or 'completion'.")
    check_chat_size(messages)
    one_line = one_line or style == "completion"
    ids = chat_input_ids(tokenizer, messages, style)
    if ids.shape[1] + max_new_tokens > max_context:
        raise TacqError(
            f"The conversation is {ids.shape[1]} tokens; with {max_new_tokens} new "
            f"tokens it exceeds the {max_context}-token context. Clear the chat."
        )
    stop = stop or threading.Event()

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs) -> bool:
            return stop.is_set()

    device = input_device(model)
    streamer = TextIteratorStreamer(
        tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300
    )
    kwargs = dict(
        input_ids=ids.to(device),
        attention_mask=torch.ones_like(ids).to(device),
        max_new_tokens=max_new_tokens,
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=temperature > 0,
        stopping_criteria=StoppingCriteriaList(
            [_Stop()] + ([line_end_criterion(tokenizer, ids.shape[1])] if one_line else [])
        ),
    )
    if temperature > 0:
        kwargs["temperature"] = temperature
    thread = threading.Thread(target=lambda: model.generate(**kwargs), daemon=True)
    thread.start()
    reply, finished = "", False
    try:
        for piece in streamer:
            reply += piece
            yield answer_line(reply) if one_line else reply
        finished = True
    finally:
        if not finished:  # the consumer went away: end generation too
            stop.set()
        thread.join(timeout=60)


def stream_side_by_side(
    models: list[nn.Module],
    tokenizer,
    conversations: list[list[dict]],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    stop: threading.Event | None = None,
    poll_s: float = 0.1,
    style: str = "chat",
) -> Iterator[list[str]]:
    """Stream replies of several models at once: yields the list of partial replies.

    conversations[i] is model i's own history (messages format) ending with the user turn.
    An error in one model ends all of them and is raised here.
    """
    stop = stop or threading.Event()
    replies = [""] * len(models)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            for text in stream_chat(
                models[i],
                tokenizer,
                conversations[i],
                max_new_tokens,
                temperature,
                stop=stop,
                style=style,
            ):
                replies[i] = text
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(models))]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(poll_s)
        yield list(replies)
    if errors:
        raise errors[0]
    yield list(replies)
