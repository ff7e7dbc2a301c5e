"""Quantize screen: masked GPTQ at 2/3/4 bits; every result kept as a named variant."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app.circuit_tab import METRIC_CHOICES
from app.common import (
    HEAVY,
    START_RECIPE,
    cancel_handler,
    gradio_progress,
    handles_errors,
    need,
    variant_choices,
)
from app.recipe_widgets import (
    BASIS_CHOICES,
    DAMP_CHOICES,
    DISTILL_CHOICES,
    GROUP_CHOICES,
    ROUNDING_CHOICES,
    SETTINGS_CHOICES,
    recipe_of_widgets,
    rounding_choice,
    settings_values,
)
from app.state import ModelRegistry, UserState
from tacq.circuit.saliency import METRICS
from tacq.memory import dense_linear_bytes, packed_estimate
from tacq.peers.registry import INSTALL, PEER_POINTS, PEERS, package_version
from tacq.peers.run import make_peer_variant
from tacq.quant.recipe import Recipe
from tacq.study.tables import variants_table

PEER_LABELS = {"autoround": "AutoRound", "hqq": "HQQ"}
PEER_ITERS = 50  # AutoRound tuning steps per block (its default 200 is slow on a CPU)


def peer_choices() -> tuple[list[tuple[str, str]], str]:
    """('AutoRound 2-bit g128', 'autoround:2:128') for each installed peer's documented
    settings, and a note naming what is missing and how to install it."""
    choices, missing = [], []
    for peer, points in PEER_POINTS.items():
        if package_version(peer) is None:
            missing.append(PEERS[peer][0])
            continue
        for bits, groups in points.items():
            for g in groups:
                choices.append((f"{PEER_LABELS[peer]} {bits}-bit g{g}", f"{peer}:{bits}:{g}"))
    note = f"not installed: {', '.join(missing)} ({INSTALL})" if missing else ""
    return choices, note


def recipe_inputs(tab: SimpleNamespace) -> list:
    """The screen's inputs that make a recipe, in recipe_of_widgets' order (between the
    bits and the Circuit slider's ratio)."""
    return [tab.metric, tab.method, tab.circuit, tab.groups, tab.damp, tab.rounding, tab.basis,
            tab.distill, tab.act_order]  # fmt: skip


def variants_frame(user: UserState) -> pd.DataFrame:
    return variants_table(list(user.variants.values()))


def build() -> SimpleNamespace:
    gr.Markdown(
        "The outlier ratio comes from the **Circuit** slider. Ratio 0 or method "
        "RTN/GPTQ without a circuit gives the plain baselines."
    )
    start = START_RECIPE  # the screen opens on the measured preset, as the CLI's quantize
    return SimpleNamespace(**build_choice(start), **build_levers(start), **build_actions())


def build_choice(start: Recipe) -> dict:
    """Bits, the settings preset, the score, the quantizer and whether to keep a circuit."""
    with gr.Row():
        bits = gr.Radio([2, 3, 4], value=start.bits, label="Bits", elem_id="quant-bits")
        settings = gr.Radio(
            SETTINGS_CHOICES,
            value="measured",
            label="Settings",
            info="sets every option below (best measured: bench/README.md)",
            elem_id="quant-settings",
        )
        metric = gr.Dropdown(
            METRIC_CHOICES, value=start.metric, label="Which weights stay in 16 bits"
        )
        method = gr.Radio(
            [("masked GPTQ", "gptq"), ("round to nearest", "rtn")],
            value=start.method,
            label="Quantizer",
        )
        circuit = gr.Checkbox(value=True, label="Keep the circuit (ratio from the slider)")
    return dict(bits=bits, settings=settings, metric=metric, method=method, circuit=circuit)


def build_levers(start: Recipe) -> dict:
    """How GPTQ quantizes what is not kept: scales, damping, rounding, basis, distillation,
    act-order (each one Recipe field)."""
    with gr.Row():  # how GPTQ quantizes what is not kept
        groups = gr.Dropdown(
            GROUP_CHOICES,
            value=start.group_size or 0,
            label="Scales",
            elem_id="quant-groups",
            scale=1,
        )
        damp = gr.Dropdown(
            DAMP_CHOICES,
            value=start.damp,
            label="GPTQ damping",
            info="more trusts the few calibration tokens less (GPTQ only)",
            elem_id="quant-damp",
            scale=1,
        )
        rounding = gr.Dropdown(
            ROUNDING_CHOICES,
            value=rounding_choice(start),
            label="Rounding",
            info="tuned: fit each block to the fp output (slower, GPTQ only); + grid ends: "
            "scales and zeros too",
            elem_id="quant-rounding",
            scale=1,
        )
        basis = gr.Dropdown(
            BASIS_CHOICES,
            value=start.rotation or "none",
            label="Basis of the unkept weights",
            info="rotated: less error per row at the same bits; kept ones stay exact (GPTQ only)",
            elem_id="quant-basis",
            scale=1,
        )
        distill = gr.Dropdown(
            DISTILL_CHOICES,
            value=start.distill_epochs,
            label="Distil the scales",
            info="then tune every scale at once to the fp model's outputs (minutes)",
            elem_id="quant-distill",
            scale=1,
        )
        act_order = gr.Checkbox(
            value=start.act_order,
            label="Act-order",
            info="GPTQ takes the columns by decreasing Hessian diagonal (GPTQ only)",
            elem_id="quant-act-order",
            scale=1,
        )
    return dict(
        groups=groups, damp=damp, rounding=rounding, basis=basis, distill=distill,
        act_order=act_order,
    )  # fmt: skip


def build_actions() -> dict:
    """Quantize / Cancel, a peer's variant, the status line and the variants table."""
    with gr.Row():
        go = gr.Button("Quantize", variant="primary")
        cancel = gr.Button("Cancel", variant="stop")
    choices, note = peer_choices()
    with gr.Row():
        peer = gr.Dropdown(
            choices,
            value=choices[0][1] if choices else None,
            label="Or a peer quantizer, run by its own package (to compare at matched bits)",
            info=note,
            interactive=bool(choices),
            elem_id="peer-choice",
            scale=3,
        )
        peer_go = gr.Button("Make peer variant", interactive=bool(choices), scale=1)
    status = gr.Markdown(elem_id="quant-status")
    table = gr.Dataframe(label="Variants", interactive=False, elem_id="variants-table")
    with gr.Row():
        victim = gr.Dropdown([], label="Variant")
        delete = gr.Button("Delete variant")
    return dict(
        go=go, cancel=cancel, peer=peer, peer_go=peer_go, status=status, table=table,
        victim=victim, delete=delete,
    )  # fmt: skip


def make_variant(user: UserState, recipe: Recipe, progress) -> str:
    """Quantize by `recipe` on the user's study (gradients first where the score reads
    them), keep the variant, and say what it is and weighs."""
    study = need(user.study, "Choose examples (and collect gradients) first.")
    user.check_room(  # a rotated variant also holds each Linear's R
        study.lm,
        packed_estimate(
            study.lm.model, recipe.bits, recipe.ratio, recipe.group_size, recipe.rotation
        ),
    )
    stop = user.jobs.start("quantize")
    if recipe.ratio > 0 and METRICS[recipe.metric].needs_grads and study.stats is None:
        study.collect(gradio_progress(progress, stop))
    v = study.quantize(recipe, gradio_progress(progress, stop))
    user.add_variant(v, study.lm)  # saved packed: a restart finds it again
    return (
        f"Made **{v.name}**: BPW {v.size.bpw_paper:.4f} (paper formula), "
        f"{v.size.bpw_honest:.3f} with its scales and indices, "
        f"{v.size.total_bytes / 2**20:.1f} MB as a packed file (the whole model), "
        f"{v.resident_bytes / 2**20:.1f} MB of its own in memory (the rest is shared with "
        f"the original), in {v.result.seconds:.0f} s."
    )


def make_peer(user: UserState, choice: str, progress) -> str:
    """A peer's variant ("package:bits:group") calibrated on the user's examples."""
    study = need(user.study, "Choose examples first: AutoRound calibrates on them.")
    need(choice, f"No peer quantizer is installed here: {INSTALL}")
    peer, bits, group = choice.split(":")
    user.check_room(study.lm, dense_linear_bytes(study.lm.model), f"a {peer} variant")
    stop = user.jobs.start("quantize")
    texts = [e.prompt + e.answer for e in study.calib_examples]
    v = make_peer_variant(
        study.lm,
        peer,
        int(bits),
        int(group),
        texts,
        PEER_ITERS,
        gradio_progress(progress, stop),
        study.task.name,
        study.digest(),
    )
    user.add_variant(v)  # not saved packed: its codes are in the peer's format
    return (
        f"Made **{v.name}** with {v.peer['package']}: BPW {v.size.bpw_honest:.3f} with its "
        f"scales and zeros, in {v.result.seconds:.0f} s. Kept for this session (a "
        "peer's variant is exported as dequantized fp16 only)."
    )


def wire_settings(
    tab: SimpleNamespace, ratio: gr.Slider, redraw_circuit: Callable | None = None
) -> None:
    """A preset sets every lever (and the Circuit slider); a lever touched by hand makes
    the settings "my own". .input: only a person's change, not the preset's own updates."""
    # RTN has no Hessian to damp or rotate, and tuned rounding starts from GPTQ's grid
    gptq_only = [tab.damp, tab.rounding, tab.basis, tab.act_order]
    tab.method.change(
        lambda m: (gr.update(interactive=m == "gptq"),) * len(gptq_only), tab.method, gptq_only
    )
    levers = [*recipe_inputs(tab), ratio]

    def on_settings(name: str, bits: int, bits_changed: bool = False):
        if name == "custom" or (bits_changed and name != "measured"):
            return (gr.skip(),) * (len(levers) + 1)
        return settings_values(name, int(bits))

    moves_ratio = [
        tab.settings.input(on_settings, [tab.settings, tab.bits], [*levers, tab.status]),
        tab.bits.input(
            lambda name, bits: on_settings(name, bits, bits_changed=True),
            [tab.settings, tab.bits],
            [*levers, tab.status],
        ),
    ]
    for event in moves_ratio if redraw_circuit else ():
        redraw_circuit(event)
    for lever in levers:
        lever.input(lambda: "custom", None, tab.settings)


def wire(
    tab: SimpleNamespace,
    user_state: gr.State,
    ratio: gr.Slider,
    registry: ModelRegistry,
    variant_lists: list,
    redraw_circuit: Callable | None = None,
) -> None:
    """redraw_circuit(event): redraws the Circuit screen after an event that moved its ratio
    slider (circuit_tab.wire's redraw_after)."""

    def choices(user: UserState):
        return variant_choices(list(user.variants), len(variant_lists))

    @handles_errors
    def on_quantize(
        user: UserState, bits: int, metric: str, method: str, circuit: bool, group: int,
        damp: float, rounding: str, basis: str, distill: int, act_order: bool, pct: float,
        progress=gr.Progress(),
    ):  # fmt: skip
        """Named inputs, not *inputs: Gradio hands its progress only to a positional one."""
        recipe = recipe_of_widgets(
            bits, metric, method, circuit, group, damp, rounding, basis, distill, act_order, pct
        )
        return make_variant(user, recipe, progress), variants_frame(user), *choices(user)

    @handles_errors
    def on_peer(user: UserState, choice: str, progress=gr.Progress()):
        return make_peer(user, choice, progress), variants_frame(user), *choices(user)

    @handles_errors
    def on_delete(user: UserState, name: str):
        need(name, "Pick a variant to delete.")
        user.delete_variant(name)
        return f"Deleted {name}.", variants_frame(user), *choices(user)

    outs = [tab.status, tab.table, *variant_lists]
    one_bar = dict(concurrency_id=HEAVY, concurrency_limit=1, show_progress_on=[tab.status])
    tab.go.click(on_quantize, [user_state, tab.bits, *recipe_inputs(tab), ratio], outs, **one_bar)
    tab.peer_go.click(on_peer, [user_state, tab.peer], outs, **one_bar)
    tab.cancel.click(cancel_handler("quantize"), user_state, tab.status, concurrency_limit=None)
    tab.delete.click(on_delete, [user_state, tab.victim], outs)
    wire_settings(tab, ratio, redraw_circuit)
