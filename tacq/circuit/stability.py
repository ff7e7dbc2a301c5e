"""Would other examples, another score or another task give the same circuit?

Why: a circuit that changes with every sample of calibration examples describes the
sample, not the task. Circuits are compared by Jaccard overlap |A ∩ B| / |A ∪ B| of their
kept sets, overall and per layer, next to what two random sets of the same sizes would
share (k_a k_b / n expected in common per Linear of n weights), so "0.4" can be read as
"x times chance". Each calibration sample needs its own gradients (and, for scores that
read dW, its own reference quantization); both come from the disk caches when the same
sample was studied before, and progress and Cancel reach every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from itertools import combinations

import pandas as pd
import torch
from torch import Tensor

from tacq.circuit.saliency import METRICS
from tacq.circuit.select import Ranking, Selection
from tacq.data.reading import load_task
from tacq.data.tasks import TaskSet
from tacq.errors import TacqError
from tacq.models import layer_index
from tacq.progress import Progress, no_progress, scaled

KINDS = ("seeds", "halves", "metrics", "tasks")


@dataclass
class StabilityResult:
    """Circuits by label, their overlap matrix, per-layer overlaps and the chance level."""

    kind: str
    selection: Selection
    matrix: pd.DataFrame  # label x label overall Jaccard (1 on the diagonal)
    chance: pd.DataFrame  # label x label Jaccard two random sets of the same sizes expect
    layers: pd.DataFrame  # layer, pair, jaccard, chance
    shared: pd.DataFrame  # per circuit: kept, kept by every circuit, kept by no other

    def pairs(self) -> pd.DataFrame:
        """Each pair once: Jaccard, chance and their ratio."""
        labels = list(self.matrix.index)
        rows = [
            {
                "A": a,
                "B": b,
                "jaccard": self.matrix.loc[a, b],
                "chance": self.chance.loc[a, b],
                "x chance": self.matrix.loc[a, b] / max(self.chance.loc[a, b], 1e-12),
            }
            for a, b in combinations(labels, 2)
        ]
        return pd.DataFrame(rows, columns=["A", "B", "jaccard", "chance", "x chance"])

    def summary(self) -> str:
        p = self.pairs()
        what = {
            "seeds": "calibration samples",
            "halves": "halves of the examples",
            "metrics": "scores",
            "tasks": "tasks",
        }[self.kind]
        return (
            f"{len(self.matrix)} {what} at {self.selection.ratio:.2%}: mean Jaccard "
            f"{p['jaccard'].mean():.3f} (min {p['jaccard'].min():.3f}, max "
            f"{p['jaccard'].max():.3f}); two random sets of the same sizes would share "
            f"{p['chance'].mean():.4f}, so the circuits overlap {p['x chance'].mean():.0f}x "
            "chance on average."
        )


@dataclass
class Circuit:
    """A kept set as global flat indices (light: k integers, not one bool per weight)."""

    names: list[str]  # Linear names in model order
    sizes: Tensor  # (L,) weights per Linear
    flat: Tensor  # (k,) int64 flat indices into the model's Linears, in ranking order
    linear: Tensor  # (k,) int64 which Linear each kept weight is in

    @classmethod
    def of(cls, ranking: Ranking, ratio: float) -> Circuit:
        k = ranking.k_at(ratio)
        sizes = ranking.offsets[1:] - ranking.offsets[:-1]
        return cls(
            list(ranking.names), sizes, ranking.order[:k].clone(), ranking.layer_of[:k].clone()
        )


def overlap(a: Circuit, b: Circuit) -> tuple[float, float, pd.DataFrame]:
    """Overall Jaccard, chance Jaccard, and per layer (layer, jaccard, chance), all modules
    of a layer pooled. Chance: two random sets of the same sizes in each Linear share
    k_a k_b / n weights there in expectation."""
    if a.names != b.names:
        raise TacqError("These circuits come from different models.")
    L = len(a.names)
    ka = torch.bincount(a.linear, minlength=L).double()
    kb = torch.bincount(b.linear, minlength=L).double()
    inter = torch.bincount(a.linear[torch.isin(a.flat, b.flat)], minlength=L).double()
    expect = ka * kb / a.sizes.double()
    layer = torch.tensor([layer_index(n) for n in a.names])
    frame = pd.DataFrame(
        {
            "layer": layer.numpy(),
            "inter": inter.numpy(),
            "union": (ka + kb - inter).numpy(),
            "c_inter": expect.numpy(),
            "c_union": (ka + kb - expect).numpy(),
        }
    )
    per = frame.groupby("layer", sort=True).sum()
    tot = per.sum()

    def ratio(x, y):
        return x / y.where(y > 0) if isinstance(y, pd.Series) else (x / y if y else float("nan"))

    layers = pd.DataFrame(
        {
            "layer": per.index.to_numpy(),
            "jaccard": ratio(per["inter"], per["union"]).to_numpy(),
            "chance": ratio(per["c_inter"], per["c_union"]).to_numpy(),
        }
    )
    return ratio(tot["inter"], tot["union"]), ratio(tot["c_inter"], tot["c_union"]), layers


def compare(kind: str, sel: Selection, circuits: dict[str, Circuit]) -> StabilityResult:
    """The overlap matrix of named circuits (and chance, and per-layer overlaps)."""
    labels = list(circuits)
    if len(labels) < 2:
        raise TacqError("Comparing circuits needs at least two of them.")
    matrix = pd.DataFrame(1.0, index=labels, columns=labels)
    chance = pd.DataFrame(float("nan"), index=labels, columns=labels)
    parts = []
    for a, b in combinations(labels, 2):
        j, c, layers = overlap(circuits[a], circuits[b])
        matrix.loc[a, b] = matrix.loc[b, a] = j
        chance.loc[a, b] = chance.loc[b, a] = c
        parts.append(layers.assign(pair=f"{a} / {b}"))
    per_layer = pd.concat(parts, ignore_index=True)[["layer", "pair", "jaccard", "chance"]]
    return StabilityResult(kind, sel, matrix, chance, per_layer, shared_weights(circuits))


def shared_weights(circuits: dict[str, Circuit]) -> pd.DataFrame:
    """Per circuit: its kept weights, how many every circuit keeps, how many only it keeps
    (for tasks: the weights all tasks share versus the task-specific ones)."""
    flats = list(circuits.values())
    ids, counts = torch.unique(torch.cat([c.flat for c in flats]), return_counts=True)
    everywhere = ids[counts == len(flats)]
    alone = ids[counts == 1]
    return pd.DataFrame(
        [
            {
                "circuit": label,
                "kept": len(c.flat),
                "kept by every circuit": int(torch.isin(c.flat, everywhere).sum()),
                "kept by no other": int(torch.isin(c.flat, alone).sum()),
            }
            for label, c in circuits.items()
        ]
    )


# ------------------------------------------------------------ the studies compared


def _halves(study) -> list[tuple[str, Callable]]:
    """Two studies on disjoint halves of the calibration examples used (even / odd)."""
    ex = study.calib_examples
    if len(ex) < 4:
        raise TacqError("Halves need at least 4 calibration examples.")
    out = []
    for i, part in enumerate((ex[0::2], ex[1::2]), 1):
        task = replace(study.task, name=f"{study.task.name}-half{i}", calib=tuple(part))
        cfg = replace(study.data_cfg, max_examples=len(part), seed=0)
        out.append((f"half {i} ({len(part)} examples)", partial(study.with_data, task, cfg)))
    return out


def _seeds(study, n: int) -> list[tuple[str, Callable]]:
    """Studies on n seeded samples of the calibration split (seed 0: file order)."""
    pool = len(study.task.calib)
    if pool <= study.data_cfg.max_examples:
        raise TacqError(
            f"All {pool} calibration examples are used, so every seed picks the same ones; "
            "compare halves instead, or use fewer examples per study."
        )
    if n < 2:
        raise TacqError("Comparing calibration samples needs at least 2 seeds.")
    return [
        (f"seed {s}", partial(study.with_data, study.task, replace(study.data_cfg, seed=s)))
        for s in range(n)
    ]


def _tasks(study, tasks: tuple[str | TaskSet, ...]) -> list[tuple[str, Callable]]:
    """The study's own task first, then the others (default: every bundled task)."""
    from tacq.data.tasks import list_tasks

    out = [(study.task.name, lambda: study)]
    for t in tasks or tuple(list_tasks()):
        name = t.name if isinstance(t, TaskSet) else t
        if name != study.task.name:
            task = t if isinstance(t, TaskSet) else None
            out.append((name, partial(_task_study, study, name, task)))
    return out


def _task_study(study, name: str, task: TaskSet | None):
    return study.for_task(task or load_task(name))


def stability(
    study,
    sel: Selection,
    kind: str = "seeds",
    n: int = 3,
    metrics: tuple[str, ...] = ("tacq", "qal", "msg", "magnitude"),
    tasks: tuple[str | TaskSet, ...] = (),
    progress: Progress | None = None,
) -> StabilityResult:
    """Circuits at `sel` compared by overlap, across:

    seeds: n calibration samples; halves: the two halves of the examples; metrics: the
    given scores on the same examples; tasks: the given tasks (default every bundled
    task) with the same settings.
    """
    progress = progress or no_progress
    if kind not in KINDS:
        raise TacqError(f"Compare across one of {KINDS} (got {kind!r}).")
    if sel.ratio <= 0:
        raise TacqError("Pick a ratio above 0: the circuits must hold some weights.")
    if kind == "metrics":
        jobs = [(m, lambda: study, sel.at(metric=m)) for m in metrics]
    elif kind == "seeds":
        jobs = [(label, make, sel) for label, make in _seeds(study, n)]
    elif kind == "halves":
        jobs = [(label, make, sel) for label, make in _halves(study)]
    else:
        jobs = [(label, make, sel) for label, make in _tasks(study, tasks)]
    circuits: dict[str, Circuit] = {}
    for i, (label, make, job_sel) in enumerate(jobs):
        part = scaled(progress, i / len(jobs), (i + 1) / len(jobs))
        s = make()  # built here and dropped after: only the kept indices stay
        if s.stats is None and METRICS[job_sel.metric].needs_grads:
            part(0.0, f"{label}: gradients")
            s.collect(scaled(part, 0.0, 0.5))
        part(0.5, f"{label}: ranking")
        circuits[label] = Circuit.of(s.ranking(job_sel, scaled(part, 0.5, 1.0)), job_sel.ratio)
        del s
    progress(1.0, "compared")
    return compare(kind, sel, circuits)
