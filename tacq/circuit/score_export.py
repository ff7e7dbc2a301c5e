"""Scores, rankings and keep masks saved for notebooks, and loaded back into a Study.

Why: a circuit is worth studying outside the app (pandas, matplotlib, one's own probes),
and its scores cost gradients and a reference quantization to recompute. One safetensors
file holds, per chosen metric, every Linear's scores (fp16), the global ranking (flat
indices, their scores, and the Linear each belongs to) and the keep masks at one ratio;
a small JSON says what produced them (model fingerprint, examples digest, bits, group
size, ratio). Loading into a Study for the same model and examples puts the rankings in
its cache, so circuits, sizes, heads and quantization start without recomputing scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from tacq.circuit.select import Ranking, Selection
from tacq.errors import TacqError
from tacq.progress import Progress, no_progress

FORMAT = 1
TENSORS = "scores.safetensors"
META = "scores.json"


@dataclass
class SavedScores:
    """What a scores folder holds: per metric, scores, ranking and masks; and its meta."""

    meta: dict
    scores: dict[str, dict[str, Tensor]]  # metric -> Linear name -> fp16 scores (out, in)
    rankings: dict[str, Ranking]  # metric -> global ranking
    masks: dict[str, dict[str, Tensor]]  # metric -> Linear name -> bool keep mask at ratio


def save_scores(
    study,
    folder: str | Path,
    metrics: list[str],
    sel: Selection,
    progress: Progress | None = None,
) -> Path:
    """Write scores, rankings and masks at sel.ratio for each metric (sel's bits/group)."""
    progress = progress or no_progress
    if not metrics:
        raise TacqError("Pick at least one metric to export.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    names: list[str] = []
    shapes: list[list[int]] = []
    max_ratio = {}
    for i, metric in enumerate(metrics):
        progress(i / len(metrics), f"scores under {metric}")
        s = sel.at(metric=metric)
        ranking = study.ranking(s)
        names, shapes = ranking.names, [list(x) for x in ranking.shapes]
        max_ratio[metric] = ranking.max_ratio
        for name, t in study.scores(s).items():
            tensors[f"scores/{metric}/{name}"] = t.detach().to(torch.float16).contiguous()
        for field in ("order", "layer_of", "scores_sorted", "offsets"):
            tensors[f"ranking/{metric}/{field}"] = getattr(ranking, field).contiguous()
        for name, m in ranking.masks(sel.ratio).items():
            tensors[f"masks/{metric}/{name}"] = m.contiguous()
    meta = {
        "format": FORMAT,
        "what": "tacq scores, rankings and keep masks",
        "model": study.lm.name,
        "model_fingerprint": study.lm.fingerprint,
        "task": study.task.name,
        "examples_digest": study.digest(),
        "calibration_examples": len(study.calib_examples),
        "bits": sel.bits,
        "group_size": sel.group_size,
        "ratio": sel.ratio,
        "metrics": metrics,
        "max_ratio": max_ratio,
        "names": names,
        "shapes": shapes,
    }
    save_file(tensors, str(folder / TENSORS))
    (folder / META).write_text(json.dumps(meta, indent=1))
    progress(1.0, "scores written")
    return folder


def load_scores(folder: str | Path) -> SavedScores:
    """Read a folder written by save_scores, refusing a damaged or foreign one clearly."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META).read_text())
        flat = load_file(str(folder / TENSORS))
    except FileNotFoundError as e:
        raise TacqError(f"{folder} has no {META} / {TENSORS}: not a tacq scores folder.") from e
    except (ValueError, OSError, SafetensorError) as e:  # truncated file, bad JSON
        raise TacqError(f"{folder}: the scores file is damaged ({e}).") from e
    if meta.get("format") != FORMAT:
        raise TacqError(f"{folder}: scores format {meta.get('format')!r}, expected {FORMAT}.")
    shapes = [tuple(s) for s in meta["shapes"]]
    out = SavedScores(meta, {}, {}, {})
    try:
        for metric in meta["metrics"]:
            out.scores[metric] = {n: flat[f"scores/{metric}/{n}"] for n in meta["names"]}
            out.masks[metric] = {n: flat[f"masks/{metric}/{n}"] for n in meta["names"]}
            r = {f: flat[f"ranking/{metric}/{f}"] for f in ("order", "layer_of", "offsets")}
            out.rankings[metric] = Ranking(
                list(meta["names"]),
                shapes,
                r["offsets"],
                r["order"],
                r["layer_of"],
                flat[f"ranking/{metric}/scores_sorted"],
                meta["max_ratio"][metric],
            )
    except KeyError as e:
        raise TacqError(f"{folder}: the scores file lacks {e}; it is incomplete.") from e
    return out


def attach(study, saved: SavedScores) -> list[Selection]:
    """Put the saved rankings in the study's cache (same model and examples only).

    -> the selections now answered from the cache, one per metric.
    """
    meta = saved.meta
    if meta["model_fingerprint"] != study.lm.fingerprint:
        raise TacqError(
            f"These scores are for model {meta['model']} ({meta['model_fingerprint']}); "
            f"the loaded model is {study.lm.name}."
        )
    if meta["examples_digest"] != study.digest():
        raise TacqError(
            f"These scores come from other examples (task {meta['task']}); load those "
            "examples first."
        )
    sels = []
    for metric, ranking in saved.rankings.items():
        sel = Selection(metric, meta["bits"], meta["ratio"], meta["group_size"])
        study.scorer.rankings[sel.ranking_key] = ranking
        sels.append(sel)
    return sels
