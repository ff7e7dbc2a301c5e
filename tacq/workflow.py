"""One study of a model on a task: the steps the CLI and the app both run, with caches.

gradients (cached on disk) -> unmasked reference quantization per bit width (cached on
disk; gives dW and the GPTQ baseline) -> scores + global ranking per metric (in memory) ->
masked GPTQ variants at any ratio. Every heavy result is computed once and reused.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from tacq.cache import cache_key, load_checked, save_atomic, tacq_home
from tacq.data import Batch, DataConfig, TaskSet, encode_all, examples_digest, make_batches
from tacq.errors import TacqError
from tacq.explain import ModuleExplanation, explain_module, row_col_saliency
from tacq.gptq import GPTQConfig, LayerQuant, QParams
from tacq.gradients import (
    GradientConfig,
    GradStats,
    collect_cached,
    grads_cache_path,
    grads_key,
    save_stats,
)
from tacq.memory import check_room_for_copy
from tacq.models import LoadedModel, quantizable_linears
from tacq.progress import Progress
from tacq.quantize import QuantResult, quantize_model, quantized_copy
from tacq.saliency import METRICS, NEEDS_QUANT, LayerInputs, layer_scores, model_scores
from tacq.select import Ranking, SizeReport, check_ratio, rank, rank_layers, size_report

log = logging.getLogger(__name__)

DEFAULT_RATIO = 0.0035  # the paper's outlier ratio
SLIDER_MAX_RATIO = 0.02  # rankings cover this much by default (the app's slider range)
STREAM_SCORES_ABOVE = 500_000_000  # weights; above, scores are ranked one Linear at a time


@dataclass
class Variant:
    """A quantized copy of the model with how it was made and what it weighs."""

    name: str  # e.g. 'tacq-3bit-0.35%'
    model: torch.nn.Module
    result: QuantResult
    size: SizeReport
    settings: dict


@dataclass
class Study:
    lm: LoadedModel
    task: TaskSet
    data_cfg: DataConfig = field(default_factory=DataConfig)
    grad_cfg: GradientConfig = field(default_factory=GradientConfig)
    stats: GradStats | None = None
    refs: dict[tuple, QuantResult] = field(default_factory=dict)  # (bits, method) -> unmasked
    rankings: dict[tuple, Ranking] = field(default_factory=dict)  # (metric, bits) -> ranking
    exec_device: str | None = None  # stream GPTQ blocks through this device (large models)
    fast_gptq: bool = True  # False: the pre-stacking GPTQ path, no reused search (benches)

    # ------------------------------------------------------------ data
    @property
    def calib_examples(self):
        """The calibration examples: file order, or a seeded sample (seed > 0) for spread."""
        n, seed = self.data_cfg.max_examples, self.data_cfg.seed
        if seed == 0:
            return list(self.task.calib[:n])
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(self.task.calib), generator=g)[:n].tolist()
        return [self.task.calib[i] for i in pick]

    def digest(self) -> str:
        return examples_digest(self.calib_examples, self.task.style)

    def batches(self, answer_only: bool | None = None) -> list[Batch]:
        """Calibration batches: the same examples feed the gradients and the Hessians."""
        if not self.calib_examples:
            raise TacqError("The task has no calibration examples.")
        enc = encode_all(self.lm.tokenizer, self.calib_examples, self.task.style, self.data_cfg)
        only = self.grad_cfg.answer_only if answer_only is None else answer_only
        pad = self.lm.tokenizer.pad_token_id
        return make_batches(enc, self.grad_cfg.batch_size, pad, only, by_length=True)

    def token_count(self) -> int:
        return sum(b.n_tokens for b in self.batches())

    # ------------------------------------------------------------ gradients
    def collect(self, progress: Progress | None = None) -> GradStats:
        """Per-sample |grad| sums, from the disk cache when the same run was done before."""
        key = grads_key(self.lm.fingerprint, self.digest(), self.data_cfg, self.grad_cfg)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # torchrun: every rank computes its shard (no cache read, so no rank can skip
            # the all-reduce); rank 0 writes the cache for later single-process runs.
            from tacq.distributed import collect_abs_grads_distributed

            self.stats = collect_abs_grads_distributed(
                self.lm.model, self.batches(), self.grad_cfg, progress
            )
            if torch.distributed.get_rank() == 0:
                save_stats(grads_cache_path(key), key, self.stats)
        else:
            self.stats = collect_cached(self.lm.model, self.batches(), self.grad_cfg, key, progress)
        self.rankings.clear()
        return self.stats

    # ------------------------------------------------------------ reference quantization
    def reference(
        self, bits: int, method: str = "gptq", progress: Progress | None = None
    ) -> QuantResult:
        """Unmasked quantization at `bits` (GPTQ by default): dW for the scores, and a baseline."""
        cfg = GPTQConfig(bits=bits, method=method)
        if (bits, method) in self.refs:
            return self.refs[(bits, method)]
        key = cache_key(
            "ref", self.lm.fingerprint, self.digest(), asdict(self.data_cfg), asdict(cfg)
        )
        path = tacq_home() / "quant" / f"{key[:32]}.safetensors"
        names = list(quantizable_linears(self.lm.model))
        res = _load_quant(path, key, cfg, names)
        if res is None:
            qp_path, qp_key = self._qparams_entry(cfg)
            known = _load_qparams(qp_path, qp_key, names) if self.fast_gptq else None
            res = quantize_model(
                self.lm.model,
                self.batches(answer_only=False),
                cfg,
                progress=progress,
                exec_device=self.exec_device,
                unmasked=known,  # e.g. found by another task's study of this model
                fast=self.fast_gptq,
            )
            _save_quant(path, key, res)
            if known is None and self.fast_gptq:
                _save_qparams(qp_path, qp_key, res)
        elif progress:
            progress(1.0, f"{method} {bits}-bit reference: loaded from cache")
        self.refs[(bits, method)] = res
        return res

    def _qparams_entry(self, cfg: GPTQConfig) -> tuple[Path, str]:
        """Where the unmasked grid of the weights is cached: it depends on the weights, the
        bit width and the search settings only, not on the examples or the method."""
        search = (cfg.bits, cfg.grid, cfg.max_shrink, cfg.norm)
        device = str(self.exec_device or self.lm.device).split(":")[0]
        key = cache_key("qparams", self.lm.fingerprint, search, device)
        return tacq_home() / "quant" / f"qparams-{key[:32]}.safetensors", key

    def unmasked_qparams(self, cfg: GPTQConfig) -> dict[str, QParams] | None:
        """The unmasked grid for a masked run, if a reference already found it (no work)."""
        ref = self.refs.get((cfg.bits, cfg.method))
        if ref is not None:
            return ref.qparams()
        path, key = self._qparams_entry(cfg)
        return _load_qparams(path, key, list(quantizable_linears(self.lm.model)))

    # ------------------------------------------------------------ scores and ranking
    def scores_check(self, metric: str, bits: int, progress: Progress | None = None) -> None:
        """Refuse an unknown metric or missing gradients; compute dW if the metric needs it."""
        if metric not in METRICS:
            raise TacqError(f"Unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")
        if metric != "magnitude" and self.stats is None:
            raise TacqError("Collect gradients first.")
        if metric in NEEDS_QUANT:
            self.reference(bits, progress=progress)

    def scores(self, metric: str, bits: int, progress: Progress | None = None) -> dict[str, Tensor]:
        """Every Linear's scores (all in memory: for small models and tests)."""
        self.scores_check(metric, bits, progress)
        ref = self.reference(bits) if metric in NEEDS_QUANT else None
        weights = {n: m.weight for n, m in quantizable_linears(self.lm.model).items()}
        return model_scores(metric, weights, self.stats, ref)

    def ranking(
        self,
        metric: str,
        bits: int,
        max_ratio: float = SLIDER_MAX_RATIO,
        progress: Progress | None = None,
    ) -> Ranking:
        """Global order for (metric, bits); bits matter only for metrics that use dW."""
        key = (metric, bits if metric in NEEDS_QUANT else None)
        have = self.rankings.get(key)
        if have is None or have.max_ratio < max_ratio:
            self.scores_check(metric, bits, progress)
            linears = quantizable_linears(self.lm.model)
            names = list(linears)
            shapes = [tuple(m.weight.shape) for m in linears.values()]
            top = max(max_ratio, SLIDER_MAX_RATIO)
            if sum(o * i for o, i in shapes) <= STREAM_SCORES_ABOVE:
                self.rankings[key] = rank(self.scores(metric, bits), top)  # faster when it fits
            else:  # one Linear's scores at a time: the score vector never exists whole
                self.rankings[key] = rank_layers(
                    names, shapes, lambda i: self.module_scores(metric, bits, names[i])[0], top
                )
        return self.rankings[key]

    def module_scores(self, metric: str, bits: int, name: str) -> tuple[Tensor, Tensor | None]:
        """One Linear's scores under `metric` and its dW (None when not computed yet)."""
        lin = quantizable_linears(self.lm.model)[name]
        ref = self.refs.get((bits, "gptq"))
        if metric in NEEDS_QUANT:
            ref = self.reference(bits)
        layer_ref = ref.layers.get(name) if ref is not None else None
        x = LayerInputs(
            W=lin.weight.detach().float().cpu(),
            G=self.stats.abs_grad.get(name) if self.stats else None,
            fisher=self.stats.sq_grad.get(name) if self.stats else None,
            signed=self.stats.sum_grad.get(name) if self.stats else None,
            W_q=layer_ref.dequantize() if layer_ref is not None else None,
            hinv_diag=layer_ref.hinv_diag if layer_ref is not None else None,
        )
        dW = x.W - x.W_q if x.W_q is not None else None
        return layer_scores(metric, x), dW

    def layer_saliency(self, metric: str, bits: int, name: str) -> tuple[Tensor, Tensor]:
        """Summed score per output row and input column of one Linear (the zoom view)."""
        return row_col_saliency(self.module_scores(metric, bits, name)[0])

    def explain(self, metric: str, bits: int, name: str, ratio: float) -> ModuleExplanation:
        """Top kept weights of one Linear with their W, G, dW and score, in plain words."""
        scores, dW = self.module_scores(metric, bits, name)
        lin = quantizable_linears(self.lm.model)[name]
        G = self.stats.abs_grad.get(name) if self.stats else None
        return explain_module(
            self.ranking(metric, bits, ratio), name, ratio, scores, lin.weight.detach(), G, dW
        )

    def cached_ranking(self, metric: str, bits: int) -> Ranking | None:
        """The ranking if already computed (slider moves must never start heavy work)."""
        return self.rankings.get((metric, bits if metric in NEEDS_QUANT else None))

    # ------------------------------------------------------------ bits accounting
    def other_params(self) -> int:
        """Parameters that stay in 16 bits (tied weights counted once)."""
        quant = {id(m.weight) for m in quantizable_linears(self.lm.model).values()}
        seen, n = set(), 0
        for p in self.lm.model.parameters():
            if id(p) not in quant and id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n

    def size_at(self, ranking: Ranking, ratio: float, bits: int) -> SizeReport:
        return size_report(
            ranking.shapes, ranking.counts(ratio).tolist(), bits, self.other_params()
        )

    # ------------------------------------------------------------ variants
    def quantize(
        self,
        bits: int,
        ratio: float = DEFAULT_RATIO,
        metric: str = "tacq",
        method: str = "gptq",
        progress: Progress | None = None,
    ) -> Variant:
        """A quantized copy: masked GPTQ keeping the top `ratio` weights under `metric`.

        ratio 0 gives plain GPTQ (or RTN) and reuses the cached reference quantization.
        """
        ratio = check_ratio(ratio)
        cfg = GPTQConfig(bits=bits, method=method)
        check_room_for_copy(self.lm.model, "a quantized copy of the model")
        shapes = [tuple(m.weight.shape) for m in quantizable_linears(self.lm.model).values()]
        if ratio == 0:
            result = self.reference(bits, method, progress)
            kept = [0] * len(shapes)
            name = f"{method}-{bits}bit"
        else:
            from tacq.progress import scaled

            r = self.ranking(metric, bits, ratio, scaled(progress, 0.0, 0.3))
            masks = r.masks(ratio)
            result = quantize_model(
                self.lm.model,
                self.batches(answer_only=False),
                cfg,
                masks,
                progress=scaled(progress, 0.3, 1.0),
                exec_device=self.exec_device,
                unmasked=self.unmasked_qparams(cfg) if self.fast_gptq else None,
                fast=self.fast_gptq,
            )
            kept = r.counts(ratio).tolist()
            name = f"{metric}-{bits}bit-{100 * ratio:.2f}%"
        size = size_report(shapes, kept, bits, self.other_params())
        settings = {
            "base_model": self.lm.fingerprint,
            "bits": bits,
            "ratio": ratio,
            "metric": metric if ratio else None,
            "method": method,
            "task": self.task.name,
            "examples": self.digest(),
        }
        return Variant(name, quantized_copy(self.lm.model, result), result, size, settings)


def load_variant(folder: Path) -> Variant:
    """A Variant back from a packed checkpoint (what the app keeps across restarts)."""
    from tacq.export import read_packed

    model, layers, qc = read_packed(folder)
    shapes = [tuple(lq.codes.shape) for lq in layers.values()]
    kept = [int(lq.keep_mask.sum()) for lq in layers.values()]
    quant = {id(m.weight) for m in quantizable_linears(model).values()}
    other = sum(p.numel() for p in model.parameters() if id(p) not in quant)
    bits = int(qc["bits"])
    cfg = GPTQConfig(bits=bits, method=qc.get("method") or "gptq")
    settings = {k: qc.get(k) for k in ("bits", "ratio", "metric", "method", "task", "base_model")}
    settings["examples"] = qc.get("task_hash")
    name = qc.get("variant_name") or folder.name
    return Variant(
        name, model, QuantResult(layers, cfg), size_report(shapes, kept, bits, other), settings
    )


def _save_quant(path: Path, key: str, res: QuantResult) -> None:
    tensors = {}
    for n, lq in res.layers.items():
        tensors |= {f"codes.{n}": lq.codes, f"scale.{n}": lq.scale, f"zero.{n}": lq.zero}
        if lq.hinv_diag is not None:
            tensors[f"hinv.{n}"] = lq.hinv_diag
    save_atomic(path, tensors, {"key": key, "seconds": repr(res.seconds)})


def _save_qparams(path: Path, key: str, res: QuantResult) -> None:
    tensors = {}
    for n, (scale, zero) in res.qparams().items():
        tensors |= {f"scale.{n}": scale, f"zero.{n}": zero}
    save_atomic(path, tensors, {"key": key})


def _load_qparams(path: Path, key: str, names: list[str]) -> dict[str, QParams] | None:
    t = load_checked(path, key)
    if t is None or any(f"scale.{n}" not in t or f"zero.{n}" not in t for n in names):
        return None
    return {n: (t[f"scale.{n}"], t[f"zero.{n}"]) for n in names}


def _load_quant(path: Path, key: str, cfg: GPTQConfig, names: list[str]) -> QuantResult | None:
    t = load_checked(path, key)
    if t is None:
        return None
    if any(f"codes.{n}" not in t for n in names):
        path.unlink(missing_ok=True)
        return None
    layers = {}
    for n in names:
        codes = t[f"codes.{n}"]
        empty = torch.zeros_like(codes, dtype=torch.bool)
        layers[n] = LayerQuant(
            codes,
            t[f"scale.{n}"],
            t[f"zero.{n}"],
            empty,
            torch.zeros(0, dtype=torch.float16),
            cfg.bits,
            t.get(f"hinv.{n}"),
        )
    return QuantResult(layers, cfg)
