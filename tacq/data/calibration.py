"""The calibration set: the examples that feed both the gradients and the Hessians, and
the one policy for the text a fitting pass (tuned rounding, distilled scales) sees.

One object so the pick (file order or a seeded sample), its digest (part of every cache
key) and its batches can never disagree between the steps that use them. The fit policy
lives here, once, for the app, the CLI and every bench: a checked pass holds every 4th
calibration batch aside, and the bundled generic text is added to the fit only past the
window perplexity is scored on, so no perplexity is ever measured on fitted tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from tacq.data.batches import Batch, encode_all, make_batches
from tacq.data.tasks import DataConfig, Example, TaskSet, examples_digest, generic_text
from tacq.errors import TacqError

# The start of the bundled generic text that perplexity reads: at most 8 chunks of 256
# tokens (bench/quality.py's 8; the causal tests read 2). Never in a fit.
PPL_WINDOW_TOKENS = 8 * 256
FIT_TEXT_LENGTH = 256  # tokens per generic-text fit batch


@dataclass(frozen=True)
class CalibrationSet:
    task: TaskSet
    tokenizer: object
    data_cfg: DataConfig
    batch_size: int = 8  # examples per batch (the gradient config's)

    @cached_property
    def examples(self) -> list[Example]:
        """File order, or a seeded sample (seed > 0) to measure the spread over picks."""
        n, seed = self.data_cfg.max_examples, self.data_cfg.seed
        if seed == 0:
            return list(self.task.calib[:n])
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(self.task.calib), generator=g)[:n].tolist()
        return [self.task.calib[i] for i in pick]

    @cached_property
    def digest(self) -> str:
        return examples_digest(self.examples, self.task.style)

    def batches(self, answer_only: bool) -> list[Batch]:
        """Batches sorted by length; answer_only puts the loss on answer tokens only."""
        if not self.examples:
            raise TacqError("The task has no calibration examples.")
        enc = encode_all(self.tokenizer, self.examples, self.task.style, self.data_cfg)
        pad = self.tokenizer.pad_token_id
        return make_batches(enc, self.batch_size, pad, answer_only, by_length=True)

    def fit_and_check(
        self, fit_text: str = "task+generic", checked: bool = True
    ) -> tuple[list[Batch], list[Batch]]:
        """(fit, check) batches of a pass that fits weights to the fp model: checked, every
        4th calibration batch is held out of the fit and scored on its answers (check);
        "task+generic" adds the generic text outside the perplexity window to the fit (a
        task's few hundred tokens alone are overfit in an epoch or two)."""
        full = self.batches(answer_only=False)
        fit, check = hold_aside(full, self.batches(answer_only=True)) if checked else (full, [])
        if fit_text == "task+generic":
            fit = fit + generic_fit_batches(self.tokenizer)
        elif fit_text != "task":
            raise TacqError(f"Unknown fit text {fit_text!r}: task+generic or task.")
        return fit, check


def generic_fit_texts(tokenizer, skip_tokens: int = PPL_WINDOW_TOKENS) -> list[str]:
    """The generic text past the part perplexity reads, as paragraphs: extra calibration
    text for a fit (or a peer's calibration), never the tokens it is then scored on."""
    ids = tokenizer(generic_text(), add_special_tokens=False)["input_ids"]
    unread = tokenizer.decode(ids[skip_tokens:])
    return [p for p in unread.split("\n\n") if p.strip()]


def generic_fit_batches(tokenizer, length: int = FIT_TEXT_LENGTH) -> list[Batch]:
    """generic_fit_texts as full [1, length] batches (cut as the peers' calibration is)."""
    return text_batches(tokenizer, generic_fit_texts(tokenizer), length)


def calibration_chunks(tokenizer, texts: list[str], seqlen: int) -> list[torch.Tensor]:
    """The texts joined (blank line between) and cut into [1, seqlen] token tensors.

    AutoRound skips any text shorter than its seqlen; task examples are 30-60 tokens, so
    joined chunks let it use every calibration token TaCQ sees (the last partial chunk is
    dropped). No EOS between texts: AutoRound masks pad tokens, and pad is EOS here.
    """
    sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t, add_special_tokens=False)["input_ids"] + sep
    return [
        torch.tensor(ids[i : i + seqlen]).unsqueeze(0)
        for i in range(0, len(ids) - seqlen + 1, seqlen)
    ]


def text_batches(tokenizer, texts: list[str], length: int = 256) -> list[Batch]:
    """Texts joined and cut into full [1, length] batches: tokens for the rounding pass
    beyond a task's few hundred: it fits every weight of a block, and on a task's text alone
    a peer doing the same overfits (bench/README.md)."""
    out = []
    for chunk in calibration_chunks(tokenizer, texts, length):
        ones = torch.ones_like(chunk)
        out.append(Batch(chunk, ones, ones.bool()))
    return out


def hold_aside(
    full: list[Batch], answers: list[Batch], every: int = 4
) -> tuple[list[Batch], list[Batch]]:
    """Split calibration batches -> (fit, check): every `every`-th batch is held out of the
    fit and checked on its answer tokens. full and answers hold the same examples in the
    same order (loss on the whole sequence and on the answers)."""
    if len(full) != len(answers):
        raise TacqError("hold_aside needs the same batches with two loss masks.")
    held = set(range(every - 1, len(full), every)) or ({len(full) - 1} if len(full) > 1 else set())
    fit = [b for i, b in enumerate(full) if i not in held]
    return fit, [b for i, b in enumerate(answers) if i in held]
