"""Held-out metrics (answer NLL, exact match, KL to the fp model, perplexity) and generation."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tacq.data.batches import encode_prompt
from tacq.data.tasks import Example
from tacq.errors import TacqError
from tacq.eval.answers import answer_line_ended, score_and_generate
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


def line_end_criterion(tokenizer, prompt_len: int):
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
            [line_end_criterion(tokenizer, T)] if style == "completion" else []
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
