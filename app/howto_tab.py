"""How it works: the three scores, and a live toy layer computed by the real functions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import gradio as gr

from app import figures
from app.common import handles_errors
from tacq.circuit.saliency import METRICS
from tacq.errors import TacqError
from tacq.study.toy import make_toy, toy_kept, toy_scores

EXPLAIN = r"""
### Which weights does a task need?
Quantizing weight $w_{ij}$ to $Q(w_{ij})$ changes it by $\Delta w_{ij} = w_{ij} - Q(w_{ij})$.
The task's sensitivity to it comes from gradients collected on **your examples**, summed per
sample so that opposite signs do not cancel: $G_{ij} = \sum_s \left|\partial L_s / \partial w_{ij}\right|$.

| score | formula | what it asks |
|---|---|---|
| **QAL** (quantization-aware localization) | $\left\lvert G_{ij}\,\Delta w_{ij} \right\rvert$ | how much does the loss move when *this* weight is rounded? (first-order Taylor) |
| **MSG** (magnitude-sharpened gradient) | $\left\lvert G_{ij}\, w_{ij} \right\rvert$ | how much does the task rely on this weight at all? |
| **TaCQ** | $\left\lvert G_{ij}\,\Delta w_{ij}\, w_{ij} \right\rvert$ | both: important to the task **and** damaged by rounding |

The top $k = \lfloor p \cdot N \rfloor$ weights of the whole model (global ranking, not per layer)
stay in 16 bits; GPTQ quantizes everything else column by column and pushes each column's
rounding error onto the columns not yet quantized. Bits per weight (the paper's count):
$b\,(1-p) + 32p$, as a kept weight costs a 16-bit value and a 16-bit position.

What happens to a kept weight depends on the basis (Quantize tab):
- **as is (the paper's masked GPTQ)**: a kept weight adds no rounding error of its own, but
  it still receives the compensation updates from the columns quantized before it, so the
  16-bit value stored differs from the original (on SmolLM2 by a few percent of its value
  typically, some by more than 10 %).
- **rotated**: the kept weights are set aside before GPTQ quantizes the rest in a rotated
  basis, so each is stored exactly as it was (in fp16).

The Circuit tab's zoom lists the top kept weights with their original value and, once you
have quantized a variant of that circuit, the value that variant stores.

### Is it really a circuit?
The **causal test** (Circuit tab) damages only the kept weights, leaves everything else at full
precision, and compares the damage to the task with the damage to a control task and with
random weights of the same count in each module: a circuit that carries the task hurts the
task far more than the random set and far more than the control task. When the control task
breaks as badly, those weights matter to the whole model (large outliers), not to this task.

Below, one toy 8 × 12 layer: the numbers come from the same functions the real pipeline runs.
Input channel 5 is an activation outlier (large inputs, so large gradients); row 2 is a weight
outlier (large weights). Move the ratio and the bit width and watch what each score keeps.
"""

TOY_MAX_PCT = 30  # the slider's top
LABELS = {m: METRICS[m].label for m in ("magnitude", "qal", "msg", "tacq")}


def build() -> SimpleNamespace:
    gr.Markdown(EXPLAIN, latex_delimiters=[{"left": "$", "right": "$", "display": False}])
    with gr.Row():
        ratio = gr.Slider(
            0,
            TOY_MAX_PCT,
            value=10,
            step=1,
            label="Kept share p (% of the 96 entries)",
            elem_id="toy-ratio",
        )
        bits = gr.Radio([2, 3, 4], value=2, label="Bits", elem_id="toy-bits")
    summary = gr.Markdown(elem_id="toy-summary")
    plot = gr.Plot(label="Toy layer", elem_id="toy-plot")
    return SimpleNamespace(ratio=ratio, bits=bits, summary=summary, plot=plot)


def check_toy_settings(ratio_pct: object, bits: object) -> tuple[float, int]:
    """The slider's and radio's values, or a TacqError an API caller can act on (a posted
    NaN or out-of-range value never reaches int())."""
    pct, b = _number(ratio_pct), _number(bits)
    if not 0 <= pct <= TOY_MAX_PCT:  # False for NaN too
        raise TacqError(
            f"Kept share must be a number between 0 and {TOY_MAX_PCT} (got {ratio_pct!r})."
        )
    if b not in (2, 3, 4):
        raise TacqError(f"Bits must be 2, 3 or 4 (got {bits!r}).")
    return pct, int(b)


def _number(value: object) -> float:
    """float(value), NaN for what is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@handles_errors
def render(ratio_pct: float, bits: int):
    """Toy grids, kept masks and a summary in words; cheap (a 96-entry layer)."""
    ratio_pct, bits = check_toy_settings(ratio_pct, bits)
    toy = make_toy(bits)
    scores = toy_scores(toy)
    p = float(ratio_pct) / 100
    kept = {
        m: toy_kept(s, p) if p > 0 else s.new_zeros(s.shape, dtype=bool) for m, s in scores.items()
    }
    k = int(p * toy.n)
    grids = {"W": toy.W, "G = Σ|g|": toy.G, "dW = W − Q(W)": toy.dW}
    grids |= {LABELS[m]: scores[m] for m in scores}
    marks = {LABELS[m]: [tuple(ix) for ix in kept[m].nonzero().tolist()] for m in kept}
    tacq = kept["tacq"]
    agree = ", ".join(f"{LABELS[m]} {int((kept[m] & tacq).sum())}" for m in kept if m != "tacq")
    channel5 = {LABELS[m]: int(kept[m][:, 5].sum()) for m in kept}
    text = (
        f"**k = ⌊{p:.2f} × {toy.n}⌋ = {k}** entries kept by each score at {int(bits)} bits. "
        f"TaCQ shares with: {agree}. Kept in the outlier input channel 5: "
        + ", ".join(f"{n} {c}" for n, c in channel5.items())
        + f". Mean |dW| at {int(bits)} bits: {float(toy.dW.abs().mean()):.3f}."
    )
    return text, figures.toy_figure(grids, marks)


def wire(tab: SimpleNamespace, demo: gr.Blocks) -> None:
    for ev in (tab.ratio.release, tab.bits.change):
        ev(render, [tab.ratio, tab.bits], [tab.summary, tab.plot], queue=False)
    demo.load(render, [tab.ratio, tab.bits], [tab.summary, tab.plot], queue=False)
