"""Saliency scores per weight: TaCQ, QAL, MSG and the baselines, in one code path.

All are pure functions of cached statistics: G (sum of per-sample |grad|), the weight W,
its unmasked quantization W_q (so dW = W - W_q), and for some baselines the Fisher sum,
the signed gradient sum or the inverse-Hessian diagonal. Scores are (out, in) fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tacq.errors import TacqError

METRICS = {
    "tacq": "TaCQ |G·dW·W|",
    "qal": "QAL |G·dW|",
    "msg": "MSG |G·W|",
    "magnitude": "|W|",
    "fisher": "Fisher Σg²",
    "abs_grad": "Σ|g|",
    "signed_grad": "|Σg|",
    "spqr": "SpQR-like dW²/diag(H⁻¹)²",
    "squeezellm": "SqueezeLLM-like Fisher·dW²",
}
NEEDS_QUANT = {"tacq", "qal", "spqr", "squeezellm"}  # need dW = W - Q(W)
NEEDS_EXTRA = {"fisher", "signed_grad", "squeezellm"}  # need sum g^2 or signed sum g


@dataclass
class LayerInputs:
    """What any metric may need for one Linear; unused fields may be None."""

    W: Tensor  # (out, in) weight
    G: Tensor | None = None  # sum_s |dL_s/dW|
    fisher: Tensor | None = None  # sum_s (dL_s/dW)^2
    signed: Tensor | None = None  # sum_s dL_s/dW
    W_q: Tensor | None = None  # unmasked quantization at the target bits
    hinv_diag: Tensor | None = None  # (in,) diag of the inverse-Hessian Cholesky factor


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


def layer_scores(metric: str, x: LayerInputs) -> Tensor:
    """The score of every weight of one Linear under `metric`. -> (out, in) fp32."""
    need = {
        "tacq": ("G", "W_q"),
        "qal": ("G", "W_q"),
        "msg": ("G",),
        "fisher": ("fisher",),
        "abs_grad": ("G",),
        "signed_grad": ("signed",),
        "spqr": ("W_q", "hinv_diag"),
        "squeezellm": ("fisher", "W_q"),
        "magnitude": (),
    }
    if metric not in need:
        raise TacqError(f"Unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")
    lacking = [f for f in need[metric] if getattr(x, f) is None]
    if lacking:
        raise TacqError(
            f"Metric {metric!r} needs {', '.join(lacking)}; collect them first "
            "(gradients with extra stats, or the reference quantization)."
        )
    if metric == "tacq":
        return tacq_scores(x.G, x.W, x.W_q)
    if metric == "qal":
        return qal_scores(x.G, x.W, x.W_q)
    if metric == "msg":
        return msg_scores(x.G, x.W)
    if metric == "magnitude":
        return x.W.float().abs()
    if metric == "fisher":
        return x.fisher.float()
    if metric == "abs_grad":
        return x.G.float()
    if metric == "signed_grad":
        return x.signed.float().abs()
    if metric == "spqr":
        return spqr_scores(x.W, x.W_q, x.hinv_diag)
    return x.fisher.float() * (x.W.float() - x.W_q.float()).square()  # squeezellm


def model_scores(
    metric: str, weights: dict[str, Tensor], stats=None, quant_ref=None
) -> dict[str, Tensor]:
    """Scores for every Linear. stats: GradStats; quant_ref: QuantResult (unmasked, same bits)."""
    out = {}
    for name, W in weights.items():
        lq = quant_ref.layers.get(name) if quant_ref is not None else None
        x = LayerInputs(
            W=W.detach().float().cpu(),
            G=stats.abs_grad.get(name) if stats else None,
            fisher=stats.sq_grad.get(name) if stats else None,
            signed=stats.sum_grad.get(name) if stats else None,
            W_q=lq.dequantize() if lq is not None else None,
            hinv_diag=lq.hinv_diag if lq is not None else None,
        )
        out[name] = layer_scores(metric, x)
    return out
