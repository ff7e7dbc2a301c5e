"""Held-out metrics (answer NLL, exact match, KL to the fp model, perplexity) and generation."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tacq.answers import answer_line_ended, score_and_generate
from tacq.data import Example, encode_prompt
from tacq.errors import TacqError
from tacq.models import input_device
from tacq.progress import Progress, no_progress, scaled

PUNCT = ".,;:!?\"'"


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 16  # examples per forward pass
    max_new_tokens: int = 10  # greedy tokens generated for exact match (chat: x2.4)
    max_length: int = 256  # tokens per example
    version: int = 1


@dataclass
class EvalResult:
    name: str
    answer_nll: float  # mean over examples of the mean NLL of the answer tokens
    exact_match: float  # share of examples whose greedy answer matches
    kl_to_fp: float | None  # mean KL(fp || variant) over answer tokens
    rows: list[dict] = field(default_factory=list)  # prompt, answer, prediction, correct, nll


def normalize(text: str) -> str:
    """Lowercase, trim whitespace and surrounding punctuation."""
    return text.strip().lower().strip(PUNCT).strip()


def is_match(prediction: str, answer: str, style: str) -> bool:
    """Completion: first line equals the answer. Chat: the answer occurs as a whole word."""
    target = normalize(answer)
    if style == "chat":
        return (
            bool(target)
            and re.search(rf"\b{re.escape(target)}\b", normalize(prediction)) is not None
        )
    return normalize(prediction.split("\n", 1)[0]) == target


def answer_logprobs(
    model: nn.Module, tokenizer, examples: list[Example], style: str, cfg: EvalConfig
) -> tuple[list[float], list[Tensor]]:
    """Per-example answer NLL and log-probs (n_answer_tokens, vocab) at the answer positions.

    The vocabulary projection runs only where an answer token is predicted (a prompt's
    other positions would be most of the logits and none of the answer).
    """
    got = score_and_generate(model, tokenizer, examples, style, 0, cfg.batch_size, cfg.max_length)
    return got.nlls, got.logprobs


def answer_line(text: str) -> str:
    """The answer line of a completion: leading blank space kept, the rest cut."""
    start = len(text) - len(text.lstrip())
    end = text.find("\n", start)
    return text if end < 0 else text[:end]


def _line_end_criterion(tokenizer, prompt_len: int):
    """Stop each sequence once its new text holds a finished answer line (per row)."""
    from transformers import StoppingCriteria

    class LineEnd(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs) -> Tensor:
            texts = tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            done = [answer_line_ended(t) for t in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return LineEnd()


def generate_batch(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    style: str,
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[str]:
    """Greedy continuations of each prompt (left-padded batches), decoded without specials.

    Completion-style answers stop at the end of their line (exact match reads only that
    line, so scores are unchanged; the shown answer no longer runs on into a new example).
    """
    from transformers import StoppingCriteriaList

    device = input_device(model)
    pad = tokenizer.pad_token_id or 0
    outs: list[str] = []
    for i in range(0, len(prompts), batch_size):
        ids = [encode_prompt(tokenizer, p, style) for p in prompts[i : i + batch_size]]
        T = max(len(x) for x in ids)
        input_ids = torch.tensor([[pad] * (T - len(x)) + x for x in ids], device=device)
        att = torch.tensor([[0] * (T - len(x)) + [1] * len(x) for x in ids], device=device)
        criteria = StoppingCriteriaList(
            [_line_end_criterion(tokenizer, T)] if style == "completion" else []
        )
        with torch.no_grad():
            gen = model.generate(
                input_ids=input_ids,
                attention_mask=att,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                stopping_criteria=criteria,
            )
        outs += tokenizer.batch_decode(gen[:, T:], skip_special_tokens=True)
    return outs


def longest_answer(tokenizer, examples: list[Example]) -> int:
    """Tokens in the longest answer: exact match needs at least that many greedy tokens."""
    return max(len(tokenizer(e.answer, add_special_tokens=False)["input_ids"]) for e in examples)


def evaluate(
    model: nn.Module,
    tokenizer,
    examples: list[Example],
    style: str,
    name: str,
    cfg: EvalConfig | None = None,
    fp_logprobs: list[Tensor] | None = None,
    progress: Progress | None = None,
) -> tuple[EvalResult, list[Tensor]]:
    """Answer NLL, exact match and (given the fp model's log-probs) KL on held-out examples."""
    cfg = cfg or EvalConfig()
    progress = progress or no_progress
    if not examples:
        raise TacqError("No held-out examples to evaluate on.")
    progress(0.1, f"{name}: answer NLL and greedy answers")
    new = cfg.max_new_tokens if style != "chat" else int(cfg.max_new_tokens * 2.4)
    new = max(new, longest_answer(tokenizer, examples) + 2)  # a long answer is never cut short
    got = score_and_generate(model, tokenizer, examples, style, new, cfg.batch_size, cfg.max_length)
    nlls, logps, preds = got.nlls, got.logprobs, got.greedy
    kl = None
    if fp_logprobs is not None:
        total = sum(float((p.exp() * (p - q)).sum()) for p, q in zip(fp_logprobs, logps))
        kl = total / sum(len(p) for p in fp_logprobs)
    rows = [
        {
            "prompt": e.prompt,
            "answer": e.answer,
            "prediction": p.strip(),
            "correct": is_match(p, e.answer, style),
            "nll": n,
        }
        for e, p, n in zip(examples, preds, nlls)
    ]
    progress(1.0, f"{name}: done")
    em = sum(r["correct"] for r in rows) / len(rows)
    return EvalResult(name, sum(nlls) / len(nlls), em, kl, rows), logps


def perplexity(
    model: nn.Module, tokenizer, text: str, seq_len: int = 256, max_chunks: int = 16
) -> float:
    """exp(mean NLL) over non-overlapping chunks of `seq_len` tokens of `text`."""
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    chunks = [ids[i : i + seq_len] for i in range(0, len(ids) - 1, seq_len)][:max_chunks]
    chunks = [c for c in chunks if len(c) > 1]
    if not chunks:
        raise TacqError("The text is too short for perplexity.")
    device = input_device(model)
    nll, count = 0.0, 0
    for c in chunks:
        with torch.no_grad():
            logits = model(input_ids=c[None].to(device), use_cache=False).logits[0, :-1].float()
        nll += float(nn.functional.cross_entropy(logits, c[1:].to(device), reduction="sum"))
        count += len(c) - 1
    return math.exp(nll / count)


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
            [_Stop()] + ([_line_end_criterion(tokenizer, ids.shape[1])] if one_line else [])
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


def evaluate_variants(
    lm,
    task,
    variants: list,
    fp: tuple | None = None,
    progress: Progress | None = None,
    limit: int | None = None,
) -> tuple[list[EvalResult], tuple]:
    """The original model and each variant on the task's held-out split (its first
    `limit` examples when given: a fixed subset, the same for every model).

    fp: a previous (EvalResult, log-probs) of the original on these examples, reused.
    -> (results, original first; (EvalResult, log-probs) of the original, for reuse).
    """
    held, style = list(task.heldout[:limit]), task.style
    n = len(variants) + 1
    if fp is None:
        fp = evaluate(
            lm.model, lm.tokenizer, held, style, "original", progress=scaled(progress, 0, 1 / n)
        )
    results = [fp[0]]
    for i, v in enumerate(variants, 1):
        r, _ = evaluate(
            v.model,
            lm.tokenizer,
            held,
            style,
            v.name,
            fp_logprobs=fp[1],
            progress=scaled(progress, i / n, (i + 1) / n),
        )
        results.append(r)
    return results, fp
