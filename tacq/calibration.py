"""The calibration set: the examples that feed both the gradients and the Hessians.

One object so the pick (file order or a seeded sample), its digest (part of every cache
key) and its batches can never disagree between the steps that use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from tacq.data import Batch, DataConfig, Example, TaskSet, encode_all, examples_digest, make_batches
from tacq.errors import TacqError


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
