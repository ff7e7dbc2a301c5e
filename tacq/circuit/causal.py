"""Does a circuit carry the task? Damage only its weights and measure what breaks.

Why: a set of top-scoring weights is a circuit only if the task depends on it more than
on other weights. The test damages the circuit (each weight rounded to the b-bit grid of
its row, or zeroed) with everything else at full precision, and measures held-out answer
NLL and exact match on the task, answer NLL on a control task and generic perplexity.
Controls of the same size say what "more" means: random weights matched per Linear (same
count in each; several seeds, with their spread), random weights anywhere, and the
largest-magnitude weights. Damage is applied in place and always restored, so the model
is unchanged afterwards, also on Cancel or an error.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from tacq.circuit.select import Selection
from tacq.data.reading import load_task
from tacq.data.tasks import Example, TaskSet, generic_text, list_tasks
from tacq.errors import TacqError
from tacq.eval.evaluate import EvalConfig, answer_logprobs, evaluate, perplexity
from tacq.formats.grid import GPTQConfig, QParams, find_params, quantize_to_grid
from tacq.models import quantizable_linears
from tacq.progress import Progress, no_progress, scaled

DAMAGES = ("round", "zero")
CAUSAL_COLUMNS = [
    "weights damaged",
    "damaged",
    "task NLL",
    "task NLL change",
    "task EM",
    "control NLL",
    "control NLL change",
    "perplexity",
    "spread (task NLL change)",
]


@dataclass(frozen=True)
class CausalConfig:
    damage: str = "round"  # 'round': to the b-bit grid of the weight's row; 'zero'
    seeds: int = 3  # random per-Linear controls (their spread is reported)
    task_examples: int = 32  # first N held-out examples of the task (0: all)
    control_examples: int = 32  # first N held-out examples of the control task (0: all)
    ppl_chunks: int = 2  # 256-token chunks of the generic text
    version: int = 1

    def __post_init__(self) -> None:
        if self.damage not in DAMAGES:
            raise TacqError(f"Damage must be one of {DAMAGES} (got {self.damage!r}).")
        if self.seeds < 1:
            raise TacqError(f"At least one random seed is needed (got {self.seeds}).")


@dataclass
class Measurement:
    task_nll: float
    task_em: float
    control_nll: float
    ppl: float


@dataclass
class CausalResult:
    """The causal test's table and the sentence that reads it."""

    selection: Selection
    control_task: str
    damage: str
    n_damaged: int
    table: pd.DataFrame  # one row per condition, CAUSAL_COLUMNS

    def summary(self) -> str:
        t = self.table.set_index("weights damaged")
        circuit, rand = t.iloc[1], t.loc["random, same count per Linear"]
        verb = "rounding" if self.damage == "round" else "zeroing"
        return (
            f"{verb.capitalize()} these {self.selection.ratio:.2%} of the weights "
            f"({self.n_damaged:,}) raises task NLL by {circuit['task NLL change']:+.3f} and "
            f"the control task's ({self.control_task}) by {circuit['control NLL change']:+.3f}; "
            f"a random {self.selection.ratio:.2%} (same count per Linear) by "
            f"{rand['task NLL change']:+.3f} and {rand['control NLL change']:+.3f}."
        )


def default_control(task: TaskSet) -> str:
    """The first bundled task that is not this one."""
    others = [n for n in list_tasks() if n != task.name]
    if not others:
        raise TacqError("No other bundled task to use as the control.")
    return others[0]


# ------------------------------------------------------------ which weights


def random_matched(counts: dict[str, int], shapes: dict[str, tuple], seed: int) -> dict:
    """Masks with the same number of weights in each Linear, placed uniformly at random."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, k in counts.items():
        rows, cols = shapes[name]
        flat = torch.zeros(rows * cols, dtype=torch.bool)
        flat[torch.randperm(rows * cols, generator=g)[:k]] = True
        out[name] = flat.view(rows, cols)
    return out


def random_global(total: int, shapes: dict[str, tuple], seed: int) -> dict:
    """`total` weights drawn uniformly from the whole model (any Linear)."""
    sizes = torch.tensor([r * c for r, c in shapes.values()])
    n = int(sizes.sum())
    g = torch.Generator().manual_seed(seed)
    picked = torch.empty(0, dtype=torch.int64)
    while len(picked) < total:  # draw with replacement, drop repeats, top up
        draw = torch.randint(n, (total - len(picked) + 64,), generator=g)
        picked = torch.cat([picked, draw]).unique()
    picked = picked[torch.randperm(len(picked), generator=g)[:total]]
    flat = torch.zeros(n, dtype=torch.bool)
    flat[picked] = True
    starts = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])
    return {
        name: flat[int(starts[i]) : int(starts[i + 1])].view(shape)
        for i, (name, shape) in enumerate(shapes.items())
    }


# ------------------------------------------------------------ damage


@dataclass
class RowGrids:
    """Each row's b-bit grid (scale, zero), fitted on the original weights as RTN and
    GPTQ fit it; computed for the rows a damage touches, then kept."""

    linears: dict[str, nn.Linear]
    cfg: GPTQConfig
    known: dict[str, QParams] | None = None  # a reference's grid, when one exists

    def __post_init__(self) -> None:
        self.done: dict[str, QParams] = dict(self.known or {})
        self.fitted: dict[str, Tensor] = {}  # name -> (out,) bool rows fitted here

    def rounded(self, name: str, mask: Tensor) -> Tensor:
        """The masked weights rounded to their row's grid, in row-major mask order."""
        W = self.linears[name].weight.detach()
        mask = mask.to(W.device)
        if name not in self.done:
            out = W.shape[0]
            self.done[name] = (torch.ones(out, device=W.device), torch.zeros(out, device=W.device))
            self.fitted[name] = torch.zeros(out, dtype=torch.bool, device=W.device)
        scale, zero = (t.to(W.device) for t in self.done[name])
        if name in self.fitted:
            todo = mask.any(1) & ~self.fitted[name]
            if todo.any():
                scale[todo], zero[todo] = find_params(W[todo].float(), None, self.cfg)
                self.fitted[name] |= todo
        r, c = mask.nonzero(as_tuple=True)
        _, q = quantize_to_grid(W[r, c].float(), scale[r], zero[r], self.cfg.maxq)
        return q


@contextmanager
def damaged(
    linears: dict[str, nn.Linear], masks: dict[str, Tensor], damage: str, grids: RowGrids
) -> Iterator[int]:
    """Weights under `masks` rounded or zeroed in place; restored on exit. -> count."""
    saved: list[tuple[Tensor, Tensor, Tensor]] = []
    try:
        with torch.no_grad():
            for name, mask in masks.items():
                if not mask.any():
                    continue
                W = linears[name].weight
                where = mask.to(W.device)
                saved.append((W, where, W[where].clone()))
                if damage == "zero":
                    W[where] = 0
                else:
                    W[where] = grids.rounded(name, mask).to(W.device, W.dtype)
        yield sum(int(m.sum()) for m in masks.values())
    finally:
        with torch.no_grad():
            for W, where, values in saved:
                W[where] = values


# ------------------------------------------------------------ measure


def _first(examples: tuple[Example, ...], n: int) -> list[Example]:
    return list(examples[:n] if n else examples)


def measure(
    model: nn.Module,
    tokenizer,
    task: TaskSet,
    control: TaskSet,
    cfg: CausalConfig,
    text: str,
) -> Measurement:
    """Task answer NLL and exact match, control answer NLL, generic perplexity."""
    r, _ = evaluate(model, tokenizer, _first(task.heldout, cfg.task_examples), task.style, "")
    ev = EvalConfig()
    nlls, _ = answer_logprobs(
        model, tokenizer, _first(control.heldout, cfg.control_examples), control.style, ev
    )
    ppl = perplexity(model, tokenizer, text, max_chunks=cfg.ppl_chunks)
    return Measurement(r.answer_nll, r.exact_match, sum(nlls) / len(nlls), ppl)


def _row(label: str, n: int, ms: list[Measurement], base: Measurement) -> dict:
    """One table row: the mean over seeds, with the spread of the task NLL change."""
    mean = lambda f: statistics.fmean(f(m) for m in ms)  # noqa: E731
    changes = [m.task_nll - base.task_nll for m in ms]
    spread = ""
    if len(ms) > 1:
        spread = f"{min(changes):+.3f} .. {max(changes):+.3f} ({len(ms)} seeds)"
    return {
        "weights damaged": label,
        "damaged": n,
        "task NLL": mean(lambda m: m.task_nll),
        "task NLL change": mean(lambda m: m.task_nll) - base.task_nll,
        "task EM": mean(lambda m: m.task_em),
        "control NLL": mean(lambda m: m.control_nll),
        "control NLL change": mean(lambda m: m.control_nll) - base.control_nll,
        "perplexity": mean(lambda m: m.ppl),
        "spread (task NLL change)": spread,
    }


def causal_test(
    study,
    sel: Selection,
    control: str | TaskSet | None = None,
    cfg: CausalConfig | None = None,
    progress: Progress | None = None,
) -> CausalResult:
    """Damage the circuit at `sel` and same-size controls; one table row per condition.

    Rows: nothing damaged; the circuit; random (same count per Linear, cfg.seeds seeds);
    random anywhere; the largest |W|. Nothing is kept: the model is restored after each.
    """
    cfg = cfg or CausalConfig()
    progress = progress or no_progress
    if sel.ratio <= 0:
        raise TacqError("Pick a ratio above 0: the circuit must hold some weights.")
    lm = study.lm
    control_task = control if isinstance(control, TaskSet) else None
    if control_task is None:
        control_task = load_task(control or default_control(study.task))
    if control_task.name == study.task.name:
        raise TacqError("Pick a control task other than the task under test.")
    if not study.task.heldout or not control_task.heldout:
        raise TacqError("The task and the control task both need held-out examples.")
    linears = quantizable_linears(lm.model)
    shapes = {n: tuple(m.weight.shape) for n, m in linears.items()}
    progress(0.0, "ranking the circuit")
    masks = study.ranking(sel, scaled(progress, 0.0, 0.1)).masks(sel.ratio)
    counts = {n: int(m.sum()) for n, m in masks.items()}
    total = sum(counts.values())
    magnitude = study.ranking(sel.at(metric="magnitude")).masks(sel.ratio)
    grid_cfg = GPTQConfig(bits=sel.bits)
    grids = RowGrids(linears, grid_cfg, study.references.unmasked_grid(grid_cfg))
    text = generic_text()
    conditions: list[tuple[str, list[dict]]] = [
        ("nothing (original)", [{}]),
        (f"circuit ({sel.metric})", [masks]),
        (
            "random, same count per Linear",
            [random_matched(counts, shapes, s) for s in range(cfg.seeds)],
        ),
        ("random, anywhere", [random_global(total, shapes, 0)]),
        ("largest |W| (magnitude)", [magnitude]),
    ]
    steps = sum(len(sets) for _, sets in conditions)
    done, rows, base = 0, [], None
    for label, sets in conditions:
        ms = []
        for m in sets:
            progress(0.1 + 0.9 * done / steps, f"measuring: {label}")
            with damaged(linears, m, cfg.damage, grids):
                ms.append(measure(lm.model, lm.tokenizer, study.task, control_task, cfg, text))
            done += 1
        base = base or ms[0]
        rows.append(_row(label, sum(int(x.sum()) for x in sets[0].values()), ms, base))
    progress(1.0, "causal test done")
    table = pd.DataFrame(rows, columns=CAUSAL_COLUMNS)
    return CausalResult(sel, control_task.name, cfg.damage, total, table)
