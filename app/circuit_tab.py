"""Circuit screen: where the task lives, the outlier-ratio slider, zoom and task overlap."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app import figures
from app.circuit_checks import build_checks, wire_checks
from app.common import (
    HEAVY,
    START_RECIPE,
    gradio_progress,
    handles_errors,
    need,
    whole,
)
from app.state import ModelRegistry, UserState
from tacq.circuit.anatomy import top_neurons
from tacq.circuit.saliency import METRICS
from tacq.circuit.select import SLIDER_MAX_RATIO, Selection, layer_table
from tacq.models import linear_at
from tacq.study.explain import circuit_variant, with_stored
from tacq.study.workflow import Study

SECOND_PASS = " · needs a 2nd gradient pass (Σg², Σg)"
# Fisher, the signed gradient and SqueezeLLM-like read sums the default pass does not keep
METRIC_CHOICES = [
    (m.label + (SECOND_PASS if m.needs_extra else ""), m.name) for m in METRICS.values()
]


def zoom_explanation(user: UserState, sel: Selection, name: str) -> tuple[str, pd.DataFrame]:
    """The zoom's words and table: the top kept weights, with each one's stored value in
    this user's latest variant of the same circuit (or a line saying there is none)."""
    study = need(user.study, "Choose examples and collect gradients first.")
    why = study.explain(sel, name)
    v = circuit_variant(user.variants.values(), sel, study.digest(), study.lm.fingerprint)
    if v is not None:
        why = with_stored(why, v)
    stored = f" {why.stored_sentence()}" if why.kept else ""  # nothing kept: nothing stored
    return why.sentence() + stored, why.top.round(6)


def build() -> SimpleNamespace:
    with gr.Row():
        metric = gr.Dropdown(METRIC_CHOICES, value="tacq", label="Saliency metric", scale=2)
        bits = gr.Radio(
            [2, 3, 4], value=START_RECIPE.bits, label="Bits (for dW and the size shown)", scale=1
        )
        show = gr.Button("Show circuit", variant="primary", scale=1)
    ratio = gr.Slider(
        0,
        100 * SLIDER_MAX_RATIO,
        value=100 * START_RECIPE.ratio,
        step=0.01,
        label="Outlier ratio (% of weights kept in 16 bits)",
        elem_id="ratio",
    )
    stats = gr.Markdown("Collect gradients, then press **Show circuit**.", elem_id="circuit-stats")
    sizes = gr.Dataframe(label="Size at this ratio", interactive=False, elem_id="size-table")
    with gr.Row():
        heat = gr.Plot(label="Share of weights kept, per layer and module", elem_id="heatmap")
        bars = gr.Plot(label="Kept weights per layer", elem_id="layer-bars")
    # A click on a heatmap cell presses this hidden button with "layer,module" (CLICK_JS).
    picked = gr.Textbox(elem_id="cell-pick", elem_classes=["tacq-hidden"], show_label=False)
    pick_go = gr.Button("pick", elem_id="cell-pick-go", elem_classes=["tacq-hidden"])
    with gr.Accordion("Zoom into one module (or click a heatmap cell)", open=False) as zoom_box:
        with gr.Row():
            layer = gr.Number(value=0, label="Layer", minimum=0)
            module = gr.Dropdown(figures.MODULES, value="down", label="Module")
            zoom = gr.Button("Zoom and explain")
        explain = gr.Markdown(elem_id="explain")
        zoom_plot = gr.Plot(elem_id="zoom-plot")
        top = gr.Dataframe(
            label="Its highest-scoring kept weights", interactive=False, elem_id="explain-table"
        )
    with gr.Accordion("Heads and neurons", open=False):
        with gr.Row():
            head_kind = gr.Radio(
                [("query heads (q rows, o columns)", "query"), ("key/value heads", "kv")],
                value="query",
                label="Heads",
            )
            anatomy = gr.Button("Show heads and neurons")
        heads_stats = gr.Markdown(elem_id="heads-stats")
        heads_plot = gr.Plot(elem_id="heads-plot")
        neurons = gr.Dataframe(
            label="MLP neurons holding most kept weights (gate/up rows + down column); "
            "select a row to zoom into its down_proj",
            interactive=False,
            elem_id="neurons-table",
        )
    return SimpleNamespace(
        metric=metric,
        bits=bits,
        show=show,
        ratio=ratio,
        stats=stats,
        sizes=sizes,
        heat=heat,
        bars=bars,
        layer=layer,
        module=module,
        zoom=zoom,
        zoom_plot=zoom_plot,
        zoom_box=zoom_box,
        picked=picked,
        pick_go=pick_go,
        explain=explain,
        top=top,
        head_kind=head_kind,
        anatomy=anatomy,
        heads_stats=heads_stats,
        heads_plot=heads_plot,
        neurons=neurons,
        **build_checks(),
    )


CLICK_JS = """
() => {
  // plotly_click on the circuit heatmap -> press the hidden button with "layer,module"
  // A redraw (Plotly.newPlot on the same div) drops every listener and makes a new
  // emitter: listen again whenever the emitter is not the one we listened on.
  setInterval(() => {
    const plot = document.querySelector('#heatmap .js-plotly-plot');
    if (!plot || !plot.on || !plot._ev || plot._tacqEv === plot._ev) return;
    plot._tacqEv = plot._ev;
    plot.on('plotly_click', (ev) => {
      const p = ev.points && ev.points[0];
      const go = document.querySelector('#cell-pick-go');
      if (!p || !go) return;
      window.tacqPicked = `${p.y},${p.x}`;
      go.click();
    });
  }, 200);
}
"""
CSS = ".tacq-hidden { display: none !important; }"


def render(study: Study, ranking, metric: str, bits: int, pct: float):
    """Figures, stats and sizes at ratio pct (%): a threshold lookup, no recomputation."""
    p = pct / 100
    table = layer_table(ranking, p)
    sel = Selection(metric, int(bits), p)
    sizes = {b: study.size_at(sel.at(bits=b), ranking) for b in (2, 3, 4)}
    s = sizes[int(bits)]
    stats = (
        f"**{METRICS[metric].label}** at **{pct:.2f}%**: keeps **{s.n_kept:,}** of "
        f"{s.n_weights:,} weights → **BPW {s.bpw_paper:.4f}** at {bits} bits "
        f"(paper formula), packed size **{s.total_bytes / 2**20:.1f} MB** "
        f"(fp16: {s.fp16_bytes / 2**20:.1f} MB)."
    )
    title = f"{METRICS[metric].label} circuit, {pct:.2f}% kept"
    return (
        figures.circuit_heatmap(table, title),
        figures.layer_bars(table),
        stats,
        figures.size_table(sizes),
    )


def wire(tab: SimpleNamespace, user_state: gr.State, registry: ModelRegistry):
    """Wire the screen -> redraw_after(event): redraw the circuit once another screen's
    event has moved the ratio slider (a programmatic move fires no release)."""
    outputs = [tab.heat, tab.bars, tab.stats, tab.sizes]

    @handles_errors
    def on_show(user: UserState, metric: str, bits: int, pct: float, progress=gr.Progress()):
        study = need(user.study, "Choose examples and collect gradients first.")
        sel = Selection(metric, int(bits), pct / 100)
        r = study.ranking(sel, gradio_progress(progress, user.jobs.start("circuit")))
        return render(study, r, metric, int(bits), pct)

    @handles_errors
    def on_ratio(user: UserState, metric: str, bits: int, pct: float):
        study = user.study
        r = study.cached_ranking(Selection(metric, int(bits), pct / 100)) if study else None
        if r is None:
            return gr.update(), gr.update(), "Press **Show circuit** for this metric.", gr.update()
        return render(study, r, metric, int(bits), pct)

    tab.show.click(
        on_show,
        [user_state, tab.metric, tab.bits, tab.ratio],
        outputs,
        show_progress_on=[outputs[0]],
        concurrency_id=HEAVY,
        concurrency_limit=1,
    )
    tab.ratio.release(
        on_ratio,
        [user_state, tab.metric, tab.bits, tab.ratio],
        outputs,
        queue=False,  # a direct request: no queue round trips for a cheap lookup
        show_progress="hidden",
    )
    for ev in (tab.metric.change, tab.bits.change):
        ev(on_ratio, [user_state, tab.metric, tab.bits, tab.ratio], outputs, concurrency_limit=None)

    def redraw_after(event) -> None:
        inputs = [user_state, tab.metric, tab.bits, tab.ratio]
        event.then(on_ratio, inputs, outputs, show_progress="hidden", concurrency_limit=None)

    wire_zoom(tab, user_state)
    wire_checks(tab, user_state)
    return redraw_after


def wire_zoom(tab: SimpleNamespace, user_state: gr.State) -> None:
    """One Linear up close: the zoom, a clicked heatmap cell or neurons-table row, and the
    heads and neurons (anatomy) of the circuit."""

    @handles_errors
    def on_zoom(user: UserState, metric: str, bits: int, pct: float, layer: float, module: str):
        study = need(user.study, "Choose examples and collect gradients first.")
        name = linear_at(study.lm.model, whole(layer, "Layer"), module)
        sel = Selection(metric, int(bits), pct / 100)
        rows, cols = study.layer_saliency(sel, name)
        plot = figures.zoom_figure(name, rows.tolist(), cols.tolist())
        return (plot, *zoom_explanation(user, sel, name))

    @handles_errors
    def on_pick(user: UserState, metric: str, bits: int, pct: float, picked: str):
        """A heatmap cell was clicked: open the zoom on that layer and module."""
        layer_s, _, module = (picked or "").partition(",")
        if not layer_s.strip().isdigit() or module not in figures.MODULES:
            return (gr.update(),) * 6
        layer = int(layer_s)
        return (
            gr.update(value=layer),
            gr.update(value=module),
            gr.Accordion(open=True),
            *on_zoom(user, metric, bits, pct, layer, module),
        )

    tab.pick_go.click(
        on_pick,
        [user_state, tab.metric, tab.bits, tab.ratio, tab.picked],
        [tab.layer, tab.module, tab.zoom_box, tab.zoom_plot, tab.explain, tab.top],
        show_progress_on=[tab.zoom_plot],
        js="(...a) => { a[a.length - 1] = window.tacqPicked || ''; return a; }",
        concurrency_id=HEAVY,
        concurrency_limit=1,
    )

    @handles_errors
    def on_anatomy(user: UserState, metric: str, bits: int, pct: float, kind: str):
        study = need(user.study, "Choose examples and collect gradients first.")
        sel = Selection(metric, int(bits), pct / 100)
        need(study.cached_ranking(sel), "Press **Show circuit** for this metric first.")
        heads = study.anatomy(sel, kind)
        top_head = heads.sort_values(["kept", "score"], ascending=False).iloc[0]
        label = "query head" if kind == "query" else "key/value head"
        msg = (
            f"**{METRICS[metric].label}** at **{pct:.2f}%**: the {label} holding most kept "
            f"weights is layer **{int(top_head['layer'])}** head **{int(top_head['head'])}** with "
            f"**{int(top_head['kept']):,}** of {int(top_head['weights']):,} "
            f"({top_head['kept share']:.2%})."
        )
        title = f"{METRICS[metric].label}: share of each {label}'s weights kept, {pct:.2f}%"
        table = top_neurons(study.anatomy(sel, "neurons"), 20)
        return msg, figures.heads_heatmap(heads, title), table.round({"kept share": 5, "score": 4})

    tab.anatomy.click(
        on_anatomy,
        [user_state, tab.metric, tab.bits, tab.ratio, tab.head_kind],
        [tab.heads_stats, tab.heads_plot, tab.neurons],
        show_progress_on=[tab.heads_stats],
        concurrency_id=HEAVY,
        concurrency_limit=1,
    )

    @handles_errors
    def on_neuron(user: UserState, metric: str, bits: int, pct: float, evt: gr.SelectData):
        """A row of the neurons table was picked: zoom into that layer's down_proj."""
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        table = user.study and user.study.anatomy(
            Selection(metric, int(bits), pct / 100), "neurons"
        )
        if table is None or row is None:
            return (gr.update(),) * 6
        layer = int(top_neurons(table, 20).iloc[int(row)]["layer"])
        return (
            gr.update(value=layer),
            gr.update(value="down"),
            gr.Accordion(open=True),
            *on_zoom(user, metric, bits, pct, layer, "down"),
        )

    tab.neurons.select(
        on_neuron,
        [user_state, tab.metric, tab.bits, tab.ratio],
        [tab.layer, tab.module, tab.zoom_box, tab.zoom_plot, tab.explain, tab.top],
        show_progress_on=[tab.zoom_plot],
        concurrency_id=HEAVY,
        concurrency_limit=1,
    )

    tab.zoom.click(
        on_zoom,
        [user_state, tab.metric, tab.bits, tab.ratio, tab.layer, tab.module],
        [tab.zoom_plot, tab.explain, tab.top],
        show_progress_on=[tab.zoom_plot],
        concurrency_id=HEAVY,
        concurrency_limit=1,
    )
