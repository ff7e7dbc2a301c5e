"""Saliency scores per weight: TaCQ, QAL, MSG and the baselines, in one code path.

All are pure functions of cached statistics: G (sum of per-sample |grad|), the weight W,
its unmasked quantization W_q (so dW = W - W_q), and for some baselines the Fisher sum,
the signed gradient sum or the inverse-Hessian diagonal. Scores are (out, in) fp32.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from tacq.errors import TacqError


@dataclass
class LayerInputs:
    """What any metric may need for one Linear; unused fields may be None."""

    W: Tensor  # (out, in) weight
    G: Tensor | None = None  # sum_s |dL_s/dW|
    fisher: Tensor | None = None  # sum_s (dL_s/dW)^2
    signed: Tensor | None = None  # sum_s dL_s/dW
    W_q: Tensor | None = None  # unmasked quantization at the target bits
    hinv_diag: Tensor | None = None  # (in,) diag of the inverse-Hessian Cholesky factor
    name: str = ""  # the Linear's module name (seeds the random control)


def tacq_scores(G: Tensor, W: Tensor, W_q: Tensor) -> Tensor:
    """|G * dW * W|, dW = W - Q(W): TaCQ (both terms, gradient not squared)."""
    W32 = W.float()
    return (G * (W32 - W_q.float()) * W32).abs()


def qal_scores(G: Tensor, W: Tensor, W_q: Tensor) -> Tensor:
    """|G * dW|: first-order Taylor estimate of the loss change from quantizing a weight."""
    return (G * (W.float() - W_q.float())).abs()


def msg_scores(G: Tensor, W: Tensor) -> Tensor:
    """|G * W|: magnitude-sharpened gradient."""
    return (G * W.float()).abs()


def spqr_scores(W: Tensor, W_q: Tensor, hinv_diag: Tensor) -> Tensor:
    """dW^2 / diag(H^-1)^2 per column (SpQR's outlier criterion)."""
    dW = W.float() - W_q.float()
    return dW.square() / hinv_diag.float().square()[None, :]


@dataclass(frozen=True)
class Metric:
    """One saliency metric: the single place its name, label, inputs and formula live."""

    name: str
    label: str  # what the app, the report and the benches print
    needs: tuple[str, ...]  # LayerInputs fields it reads besides W
    score: Callable[[LayerInputs], Tensor]  # -> (out, in) fp32
    group: str = "baseline"  # "paper": TaCQ and its two halves; "ablation": a TaCQ variant

    @property
    def needs_quant(self) -> bool:
        """Reads dW = W - Q(W) or the inverse Hessian: needs the reference quantization."""
        return bool({"W_q", "hinv_diag"} & set(self.needs))

    @property
    def needs_grads(self) -> bool:
        return bool({"G", "fisher", "signed"} & set(self.needs))

    @property
    def needs_extra(self) -> bool:
        """Reads sum g^2 or the signed sum: gradients must be collected with extra stats."""
        return bool({"fisher", "signed"} & set(self.needs))


def random_scores(x: LayerInputs) -> Tensor:
    """Uniform noise seeded by the Linear's name: its global top k is a uniformly random
    set of k weights, the same on every run (the control a circuit must beat)."""
    g = torch.Generator().manual_seed(zlib.crc32(x.name.encode()))
    return torch.rand(x.W.shape, generator=g)


def _squeezellm(x: LayerInputs) -> Tensor:
    return x.fisher.float() * (x.W.float() - x.W_q.float()).square()


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "tacq", "TaCQ |G·dW·W|", ("G", "W_q"), lambda x: tacq_scores(x.G, x.W, x.W_q), "paper"
        ),
        Metric("qal", "QAL |G·dW|", ("G", "W_q"), lambda x: qal_scores(x.G, x.W, x.W_q), "paper"),
        Metric("msg", "MSG |G·W|", ("G",), lambda x: msg_scores(x.G, x.W), "paper"),
        Metric("magnitude", "|W|", (), lambda x: x.W.float().abs()),
        Metric("fisher", "Fisher Σg²", ("fisher",), lambda x: x.fisher.float()),
        Metric("abs_grad", "Σ|g|", ("G",), lambda x: x.G.float()),
        Metric("signed_grad", "|Σg|", ("signed",), lambda x: x.signed.float().abs(), "ablation"),
        Metric(
            "spqr",
            "SpQR-like dW²/diag(H⁻¹)²",
            ("W_q", "hinv_diag"),
            lambda x: spqr_scores(x.W, x.W_q, x.hinv_diag),
        ),
        Metric("squeezellm", "SqueezeLLM-like Fisher·dW²", ("fisher", "W_q"), _squeezellm),
        Metric("random", "random (control)", (), random_scores, "control"),
    )
}


def metrics_in(group: str) -> list[str]:
    """Metric names of one group, in registry order."""
    return [m.name for m in METRICS.values() if m.group == group]


def get_metric(name: str) -> Metric:
    """The registry entry for `name`, or a TacqError listing the choices."""
    if name not in METRICS:
        raise TacqError(f"Unknown metric {name!r}; choose one of {', '.join(METRICS)}.")
    return METRICS[name]


def layer_inputs(name: str, W: Tensor, stats=None, quant_ref=None) -> LayerInputs:
    """What any metric may read for Linear `name`. stats: GradStats or None; quant_ref: the
    unmasked QuantResult at the target bits or None."""
    lq = quant_ref.layers.get(name) if quant_ref is not None else None
    return LayerInputs(
        W=W.detach().float().cpu(),
        G=stats.abs_grad.get(name) if stats else None,
        fisher=stats.sq_grad.get(name) if stats else None,
        signed=stats.sum_grad.get(name) if stats else None,
        W_q=lq.dequantize() if lq is not None else None,
        hinv_diag=lq.hinv_diag if lq is not None else None,
        name=name,
    )


def layer_scores(metric: str, x: LayerInputs) -> Tensor:
    """The score of every weight of one Linear under `metric`. -> (out, in) fp32."""
    m = get_metric(metric)
    lacking = [f for f in m.needs if getattr(x, f) is None]
    if lacking:
        raise TacqError(
            f"Metric {metric!r} needs {', '.join(lacking)}; collect them first "
            "(gradients with extra stats, or the reference quantization)."
        )
    return m.score(x)


def model_scores(
    metric: str, weights: dict[str, Tensor], stats=None, quant_ref=None
) -> dict[str, Tensor]:
    """Scores for every Linear. stats: GradStats; quant_ref: QuantResult (unmasked, same bits)."""
    return {
        n: layer_scores(metric, layer_inputs(n, W, stats, quant_ref)) for n, W in weights.items()
    }
