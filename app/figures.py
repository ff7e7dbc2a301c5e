"""pandas in, plotly out: every figure the app draws."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tacq.models import MODULE_KINDS

MODULES = list(MODULE_KINDS)  # tacq.models.module_kind names, display order
SHORT = {m: m for m in MODULES}


def _pivot(table: pd.DataFrame, value: str) -> pd.DataFrame:
    piv = table.pivot_table(index="layer", columns="module", values=value, aggfunc="sum")
    return piv.reindex(columns=[m for m in MODULES if m in piv.columns])


def kept_heatmap(
    share: pd.DataFrame, kept: pd.DataFrame, x: list[str], unit: str, title: str, height: int
) -> go.Figure:
    """Layers (rows) x units: % of each unit's weights kept, kept count on hover."""
    fig = go.Figure(
        go.Heatmap(
            z=share.values,
            x=x,
            y=[str(i) for i in share.index],
            customdata=kept.values,
            colorscale="Magma",
            reversescale=True,
            zmin=0,
            colorbar={"title": "% kept"},
            hovertemplate=f"layer %{{y}} {unit}%{{x}}: %{{z:.3f}}% kept "
            "(%{customdata:,} weights)<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title=unit.strip() or "module",
        yaxis_title="layer",
        yaxis={"autorange": "reversed"},
        height=height,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
    )
    return fig


def circuit_heatmap(table: pd.DataFrame, title: str) -> go.Figure:
    """Layers x modules: share of each Linear's weights kept in 16 bits (%)."""
    share = _pivot(table, "share") * 100
    x = [SHORT[m] for m in share.columns]
    return kept_heatmap(share, _pivot(table, "kept"), x, "", title, 560)


def heads_heatmap(heads: pd.DataFrame, title: str) -> go.Figure:
    """Layers x heads: share of each head's weights kept (tacq.circuit.anatomy's table)."""
    share = heads.pivot(index="layer", columns="head", values="kept share") * 100
    kept = heads.pivot(index="layer", columns="head", values="kept")
    return kept_heatmap(share, kept, [str(h) for h in share.columns], "head ", title, 520)


def layer_bars(table: pd.DataFrame) -> go.Figure:
    """Kept weights per layer, stacked by module."""
    kept = _pivot(table, "kept")
    fig = go.Figure([go.Bar(x=kept.index, y=kept[m], name=SHORT[m]) for m in kept.columns])
    fig.update_layout(
        barmode="stack",
        title="Kept weights per layer",
        xaxis_title="layer",
        yaxis_title="kept weights",
        height=320,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
    )
    return fig


def zoom_figure(name: str, rows: list[float], cols: list[float]) -> go.Figure:
    """Saliency summed over each output row and each input column of one Linear."""
    fig = make_subplots(rows=2, cols=1, subplot_titles=("per output row", "per input column"))
    fig.add_trace(go.Scatter(y=rows, mode="lines", name="rows"), row=1, col=1)
    fig.add_trace(go.Scatter(y=cols, mode="lines", name="columns"), row=2, col=1)
    fig.update_layout(
        title=f"Saliency of {name}",
        height=420,
        showlegend=False,
        margin={"l": 50, "r": 20, "t": 70, "b": 40},
    )
    return fig


def overlap_figure(layers: list[int], jaccard: list[float], a: str, b: str) -> go.Figure:
    """Per-layer Jaccard overlap of two tasks' keep masks."""
    y = [None if (v is None or math.isnan(v)) else v for v in jaccard]
    fig = go.Figure(go.Bar(x=layers, y=y, marker_color="#4c78a8"))
    fig.update_layout(
        title=f"Circuit overlap per layer: {a} vs {b} (Jaccard)",
        xaxis_title="layer",
        yaxis={"title": "Jaccard", "range": [0, 1]},
        height=320,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
    )
    return fig


def causal_bars(table: pd.DataFrame, task: str, control: str) -> go.Figure:
    """NLL change on the task and on the control task, per set of damaged weights."""
    rows = table.iloc[1:]  # the undamaged row is the zero line
    labels = rows["weights damaged"].tolist()
    fig = go.Figure(
        [
            go.Bar(x=labels, y=rows["task NLL change"], name=f"task ({task})"),
            go.Bar(x=labels, y=rows["control NLL change"], name=f"control ({control})"),
        ]
    )
    fig.update_layout(
        barmode="group",
        title="Answer NLL change when only these weights are damaged",
        yaxis_title="NLL change vs the original",
        height=360,
        margin={"l": 50, "r": 20, "t": 50, "b": 80},
    )
    return fig


def stability_figure(matrix: pd.DataFrame, layers: pd.DataFrame, title: str) -> go.Figure:
    """Overlap matrix of the circuits (left) and per-layer overlap of each pair (right)."""
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.4, 0.6],
        subplot_titles=("Jaccard overlap, whole model", "per layer (dotted: chance)"),
    )
    fig.add_trace(
        go.Heatmap(
            z=matrix.values,
            x=list(matrix.columns),
            y=list(matrix.index),
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            text=[[f"{v:.2f}" for v in row] for row in matrix.values],
            texttemplate="%{text}",
            showscale=False,
        ),
        row=1,
        col=1,
    )
    for pair, part in layers.groupby("pair", sort=False):
        fig.add_trace(
            go.Scatter(x=part["layer"], y=part["jaccard"], mode="lines", name=str(pair)),
            row=1,
            col=2,
        )
    chance = layers.groupby("layer")["chance"].mean()
    fig.add_trace(
        go.Scatter(
            x=chance.index,
            y=chance.values,
            mode="lines",
            line={"dash": "dot", "color": "gray"},
            name="chance (mean over pairs)",
        ),
        row=1,
        col=2,
    )
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="layer", row=1, col=2)
    fig.update_yaxes(title_text="Jaccard", range=[0, 1], row=1, col=2)
    fig.update_layout(title=title, height=420, margin={"l": 60, "r": 20, "t": 70, "b": 50})
    return fig


def pareto_traces(points: pd.DataFrame, colours: dict | None = None, legend: bool = True):
    """One marker series per maker ('by'), each point labelled and with its NLL interval.

    points: columns name, bpw, nll, low, high (the NLL's 95 % interval), by.
    """
    return [
        go.Scatter(
            x=part["bpw"],
            y=part["nll"],
            mode="markers+text",
            name=str(by),
            legendgroup=str(by),
            showlegend=legend,
            text=part["name"],
            textposition="top center",
            textfont={"size": 9},
            marker={"size": 8, **({"color": colours[by]} if colours and by in colours else {})},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": part["high"] - part["nll"],
                "arrayminus": part["nll"] - part["low"],
            },
        )
        for by, part in points.groupby("by", sort=False)
    ]


def pareto_figure(points: pd.DataFrame, fp_nll: float | None, title: str) -> go.Figure:
    """Held-out answer NLL against honest bits per weight: lower-left is better."""
    fig = go.Figure(pareto_traces(points))
    if fp_nll is not None:
        fig.add_hline(y=fp_nll, line_dash="dot", annotation_text="original (16-bit)")
    fig.update_layout(
        title=title,
        xaxis_title="bits per weight (scales, zeros and kept weights counted)",
        yaxis_title="held-out answer NLL (lower is better)",
        height=420,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def fit_figure(result) -> go.Figure:
    """An auto-fit's frontier (tacq.study.autofit.FitResult): dev answer NLL with its interval
    (left) and dev exact match with the target (right) against honest bits per weight;
    the chosen point is a star."""
    pts = result.points
    fig = make_subplots(rows=1, cols=2, subplot_titles=("dev answer NLL", "dev exact match"))
    x = [p.bpw_honest for p in pts]
    names = [p.name for p in pts]
    colour = ["#2ca02c" if p.meets else "#7f7f7f" for p in pts]
    fig.add_trace(
        go.Scatter(
            x=x, y=[p.dev_nll.mean for p in pts], mode="markers", text=names, name="NLL",
            marker={"color": colour, "size": 8}, showlegend=False,
            error_y={"type": "data", "symmetric": False,
                     "array": [p.dev_nll.high - p.dev_nll.mean for p in pts],
                     "arrayminus": [p.dev_nll.mean - p.dev_nll.low for p in pts]},
        ),
        row=1, col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(x=x, y=[p.dev_em for p in pts], mode="markers", text=names, name="EM",
                   marker={"color": colour, "size": 8}, showlegend=False),
        row=1, col=2,
    )  # fmt: skip
    if result.chosen is not None:
        c = result.chosen
        for col, y in ((1, c.dev_nll.mean), (2, c.dev_em)):
            fig.add_trace(
                go.Scatter(x=[c.bpw_honest], y=[y], mode="markers", name=f"chosen: {c.name}",
                           marker={"symbol": "star", "size": 18, "color": "#d62728"},
                           showlegend=col == 1),
                row=1, col=col,
            )  # fmt: skip
    fig.add_hline(y=result.fp_dev.answer_nll, line_dash="dot", row=1, col=1,
                  annotation_text="original")  # fmt: skip
    fig.add_hline(y=result.fp_dev.exact_match, line_dash="dot", row=1, col=2,
                  annotation_text="original")  # fmt: skip
    fig.add_hline(y=result.target_em, line_dash="dash", line_color="#2ca02c", row=1, col=2,
                  annotation_text=f"target ({result.keep:g} x)")  # fmt: skip
    fig.update_xaxes(title_text="bits per weight (scales and kept weights counted)")
    fig.update_layout(height=380, margin={"l": 60, "r": 20, "t": 50, "b": 50},
                      legend={"orientation": "h", "y": -0.25})  # fmt: skip
    return fig


def size_table(sizes: dict[int, object]) -> pd.DataFrame:
    """bits -> SizeReport as a small table."""
    return pd.DataFrame(
        [
            {
                "bits": b,
                "BPW (paper)": round(s.bpw_paper, 4),
                "BPW (with scales)": round(s.bpw_honest, 3),
                "size on disk MB": round(s.total_bytes / 2**20, 1),
                "vs fp16": f"{s.total_bytes / s.fp16_bytes:.1%}",
            }
            for b, s in sizes.items()
        ]
    )


def toy_figure(grids: dict[str, object], kept: dict[str, object]) -> go.Figure:
    """Top row: W, G, dW. Bottom row: the four scores, kept entries outlined in black."""
    top = ["W", "G = Σ|g|", "dW = W − Q(W)"]
    bottom = [k for k in grids if k not in top]
    fig = make_subplots(
        rows=2,
        cols=4,
        subplot_titles=top + [""] + bottom,
        horizontal_spacing=0.04,
        vertical_spacing=0.12,
    )
    for i, name in enumerate(top + bottom):
        row, col = (1, i + 1) if i < 3 else (2, i - 2)
        z = grids[name].tolist()
        signed = name.startswith(("W", "dW"))
        fig.add_trace(
            go.Heatmap(
                z=z,
                colorscale="RdBu" if signed else "Magma",
                reversescale=not signed,
                zmid=0 if signed else None,
                showscale=False,
                hovertemplate=f"{name} [%{{y}}, %{{x}}] = %{{z:.3g}}<extra></extra>",
            ),
            row=row,
            col=col,
        )
        for r, c in kept.get(name, []):
            fig.add_shape(
                type="rect",
                x0=c - 0.5,
                x1=c + 0.5,
                y0=r - 0.5,
                y1=r + 0.5,
                line={"color": "black", "width": 3},
                row=row,
                col=col,
            )
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=460, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig
