"""A toy layer for teaching: the real scores on a matrix small enough to read.

One 8 x 12 Linear fits a noisy linear target from 32 samples. Its per-sample gradients,
Hessian, GPTQ quantization and every score come from the same functions the full pipeline
uses (`gptq_matrix`, `layer_scores`, `rank`), so what the toy shows is what the tool does.
One input channel is made large (an activation outlier) and one weight row is made
large (a weight outlier), so the scores visibly disagree about what to keep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tacq.circuit.saliency import LayerInputs, layer_scores
from tacq.circuit.select import rank
from tacq.formats.grid import GPTQConfig
from tacq.quant.gptq import gptq_matrix

TOY_METRICS = ("magnitude", "qal", "msg", "tacq")


@dataclass
class ToyLayer:
    W: Tensor  # (out, in) weight
    G: Tensor  # sum_s |dL_s/dW|
    W_q: Tensor  # unmasked GPTQ at `bits`
    bits: int

    @property
    def dW(self) -> Tensor:
        return self.W - self.W_q

    @property
    def n(self) -> int:
        return self.W.numel()


def make_toy(
    bits: int = 2, out_f: int = 8, in_f: int = 12, samples: int = 32, seed: int = 0
) -> ToyLayer:
    """The toy layer, its summed per-sample |grad| and its GPTQ quantization at `bits`."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out_f, in_f, generator=g) * 0.5
    W[2] *= 3.0  # a weight-outlier row
    X = torch.randn(samples, in_f, generator=g)
    X[:, 5] *= 4.0  # an activation-outlier channel
    target = W + 0.3 * torch.randn(out_f, in_f, generator=g)
    err = X @ W.T - X @ target.T  # (samples, out): residual of 0.5 |W x - y|^2
    per_sample = err[:, :, None] * X[:, None, :]  # dL_s/dW = (W x_s - y_s) x_s^T
    G = per_sample.abs().sum(0)
    H = 2 * X.T @ X / samples
    W_q = gptq_matrix(W, H, None, GPTQConfig(bits=bits)).dequantize()
    return ToyLayer(W, G, W_q, bits)


def toy_scores(toy: ToyLayer) -> dict[str, Tensor]:
    x = LayerInputs(W=toy.W, G=toy.G, W_q=toy.W_q)
    return {m: layer_scores(m, x) for m in TOY_METRICS}


def toy_kept(scores: Tensor, ratio: float) -> Tensor:
    """Boolean mask of the top int(ratio * N) entries, by the pipeline's global ranking."""
    r = rank({"toy": scores}, max(ratio, 1e-9))
    return r.masks(ratio)["toy"]
