"""tacq.quant.recipe.Recipe: one type for everything that makes a variant. Its bench key reads
back to itself for every method in the committed results, its name is the one variants
always had, presets are Recipes the Quantize screen can show, and the app's widgets map to
a Recipe and back in one function each."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from app import quantize_tab, recipe_widgets
from app.circuit_tab import SLIDER_MAX_RATIO
from tacq.errors import TacqError
from tacq.quant.recipe import MEASURED, Recipe
from tacq.quant.variant import VariantSpec

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def _old_name(spec: VariantSpec) -> str:
    """VariantSpec.name as written before the Recipe (stop 48), to check nothing moved; the
    one lever added since, the tuned grid ends, adds '-clip' after its rounding."""
    fmt = f"{spec.bits}bit" + (f"-g{spec.group_size}" if spec.group_size else "")
    if spec.damp != 0.01 and spec.method == "gptq":
        fmt += f"-d{spec.damp:g}"
    if spec.rounding_steps:
        fmt += f"-r{spec.rounding_steps}" + ("c" if spec.rounding_check else "")
        fmt += "-clip" * spec.rounding_clip
    if spec.distill_epochs:
        fmt += f"-e{spec.distill_epochs}"
    if spec.rotation:
        fmt += "-roth" if spec.rotation == "hadamard" else f"-rot-{spec.rotation}"
    if not spec.ratio:
        return f"{spec.method}-{fmt}"
    return f"{spec.metric}-{fmt}-{100 * spec.ratio:.2f}%"


def test_every_committed_method_key_reads_back_to_itself_and_keeps_its_name():
    rows = json.loads((RESULTS / "quality.json").read_text())["rows"]
    seen = {(r["method"], r["bits"]) for r in rows if r["method"] != "fp"}
    assert len(seen) > 30
    for key, bits in sorted(seen):
        recipe = Recipe.from_key(key, bits)
        assert recipe.key() == key, key
        spec = VariantSpec.of(recipe)
        assert spec.name == recipe.name == _old_name(spec), key
        assert spec.recipe == recipe, key


@pytest.mark.parametrize(
    "key, changes",
    [
        ("tacq", {}),
        ("gptq_g128", {"ratio": 0.0, "group_size": 128}),
        ("rtn", {"ratio": 0.0, "method": "rtn"}),
        ("msg_p0.2_d0.1", {"metric": "msg", "ratio": 0.002, "damp": 0.1}),
        ("tacq_g64_d0.1_ao_r100c_e2_roth", {
            "group_size": 64, "damp": 0.1, "act_order": True, "rounding_steps": 100,
            "rounding_check": True, "distill_epochs": 2, "rotation": "hadamard"}),
        ("signed_grad_p1.0_ft_rot", {"metric": "signed_grad", "ratio": 0.01, "fit_text": "task",
                                     "rotation": "haar"}),
    ],
)  # fmt: skip
def test_keys_name_the_fields(key, changes):
    assert Recipe.from_key(key, 3) == Recipe(bits=3).changed(**changes)
    assert Recipe(bits=3).changed(**changes).key() == key


@pytest.mark.parametrize(
    "key", ["fp", "gptq_p0.2", "tacq_g99", "tacq_r0", "tacq_roth_d0.1", "tacq_e2_d0.1", "rtn_roth"]
)
def test_what_is_not_a_recipe_key_is_refused(key):
    with pytest.raises(TacqError):
        Recipe.from_key(key)


def test_a_recipe_refuses_what_does_not_combine_and_keeps_rtn_undamped():
    with pytest.raises(TacqError, match="Tuned rounding is for GPTQ"):
        Recipe(method="rtn", rounding_steps=10)
    with pytest.raises(TacqError, match="Act-order is for GPTQ"):
        Recipe(method="rtn", act_order=True)
    with pytest.raises(TacqError, match="--rounding-check needs --rounding-steps"):
        Recipe(rounding_check=True)
    with pytest.raises(TacqError, match="Unknown rotation 'spiral'"):
        Recipe(rotation="spiral")
    with pytest.raises(TacqError, match="Bit width"):
        Recipe(bits=5)
    assert Recipe(method="rtn", damp=0.3).damp == 0.01  # one RTN, one name, one cache entry
    assert Recipe(act_order=True).gptq_config.act_order
    assert Recipe(act_order=True).name == "tacq-2bit-ao-0.35%"


def test_dropping_levers_drops_the_tuned_roundings_three_fields_together():
    tuned = Recipe(bits=3, damp=0.1, rounding_steps=100, rounding_check=True, rounding_clip=True,
                   rotation="hadamard", act_order=True, distill_epochs=2)  # fmt: skip
    assert tuned.without_rounding() == Recipe(
        bits=3, damp=0.1, rotation="hadamard", act_order=True, distill_epochs=2
    )
    assert tuned.without_gptq_levers() == Recipe(bits=3, distill_epochs=2)
    assert tuned.without_rounding().key() == "tacq_d0.1_ao_e2_roth"


def test_presets_are_recipes_the_screen_offers():
    assert Recipe.preset("paper", 3) == Recipe(bits=3)
    assert Recipe.preset("measured", 4) == Recipe(bits=4)  # nothing measured on every task
    assert Recipe.preset("measured", 2) == Recipe(ratio=0.002, damp=0.1, rotation="hadamard")
    with pytest.raises(TacqError, match="paper, measured"):
        Recipe.preset("best", 2)
    for bits in MEASURED:
        r = Recipe.preset("measured", bits)
        assert 0 < r.ratio <= SLIDER_MAX_RATIO
        widgets = recipe_widgets.widgets_of_recipe(r)
        for value, choices in zip(
            widgets[3:8],
            [recipe_widgets.GROUP_CHOICES, recipe_widgets.DAMP_CHOICES, recipe_widgets.ROUNDING_CHOICES,
             recipe_widgets.BASIS_CHOICES, recipe_widgets.DISTILL_CHOICES],
        ):  # fmt: skip
            assert value in {v for _, v in choices}, (bits, value)


@pytest.mark.parametrize(
    "recipe",
    [
        Recipe(bits=3),
        Recipe.preset("measured", 2),
        Recipe(bits=4, metric="msg", ratio=0.01, group_size=128, damp=0.3, act_order=True,
               rounding_steps=100, rounding_check=True, distill_epochs=2),
        Recipe(bits=2, ratio=0.0, method="rtn"),
    ],
)  # fmt: skip
def test_widgets_map_to_a_recipe_and_back(recipe):
    widgets = recipe_widgets.widgets_of_recipe(recipe)
    pct = widgets[-1] if recipe.ratio else 0.35  # nothing kept: the slider is left alone
    assert recipe_widgets.recipe_of_widgets(recipe.bits, *widgets[:-1], pct) == recipe


def test_the_screen_has_an_input_for_every_field_it_sets():
    """recipe_of_widgets sets every Recipe field but the fit-text policy (the library's)."""
    import inspect

    params = list(inspect.signature(recipe_widgets.recipe_of_widgets).parameters)
    assert len(params) == len(recipe_widgets.widgets_of_recipe(Recipe())) + 1  # + the bits
    set_by_screen = {f.name for f in fields(Recipe)} - {"fit_text"}
    made = recipe_widgets.recipe_of_widgets(4, "msg", "gptq", True, 64, 0.3, "clip",
                                          "hadamard", 2, True, 1.0)  # fmt: skip
    changed = {f for f in set_by_screen if getattr(made, f) != getattr(Recipe(), f)}
    assert changed == set_by_screen - {"method"}
    rtn = recipe_widgets.recipe_of_widgets(2, "tacq", "rtn", False, 0, 0.01, "gptq", "none", 0,
                                         False, 0.35)  # fmt: skip
    assert (rtn.method, rtn.ratio) == ("rtn", 0.0)
    # the measured preset's GPTQ-only inputs, greyed out under RTN, do not reach the recipe
    greyed = recipe_widgets.recipe_of_widgets(3, "tacq", "rtn", True, 0, 0.1, "checked",
                                            "hadamard", 0, True, 0.35)  # fmt: skip
    assert greyed == Recipe(bits=3, method="rtn")


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_the_screens_open_on_the_measured_preset_at_one_bit_width(monkeypatch):
    import os

    import gradio as gr

    from app import circuit_tab
    from app.common import START_RECIPE

    assert START_RECIPE == Recipe.preset("measured", 3)
    # building Blocks sets Gradio's telemetry switch: restored after the test
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", os.environ["HF_HUB_DISABLE_TELEMETRY"])
    with gr.Blocks():
        q = quantize_tab.build()
        c = circuit_tab.build()
    widgets = [getattr(q, n) for n in ("metric", "method", "circuit", "groups", "damp",
                                       "rounding", "basis", "distill", "act_order")]  # fmt: skip
    opened = recipe_widgets.recipe_of_widgets(
        q.bits.value, *[w.value for w in widgets], c.ratio.value
    )
    assert opened == START_RECIPE and q.settings.value == "measured"
    assert c.bits.value == q.bits.value


def test_choosing_a_preset_fills_every_input():
    *inputs, line = recipe_widgets.settings_values("measured", 2)
    r = Recipe.preset("measured", 2)
    assert inputs == ["tacq", "gptq", True, 0, r.damp, "gptq", r.rotation, 0, False, 0.2]
    assert line == (
        f"Settings: {r.describe()} (measured best at 2 bits). The ratio is on the Circuit slider."
    )
    *inputs, line = recipe_widgets.settings_values("paper", 3)
    assert inputs == ["tacq", "gptq", True, 0, 0.01, "gptq", "none", 0, False, 0.35]
    assert "(the paper's)" in line


def test_rounding_choice_names_each_tuned_rounding_and_refuses_one_not_offered():
    assert recipe_widgets.rounding_choice(Recipe(rounding_steps=100, rounding_check=True)) == (
        "checked"
    )
    assert recipe_widgets.rounding_choice(Recipe(rounding_steps=100)) == "tuned"
    clip = Recipe(rounding_steps=100, rounding_check=True, rounding_clip=True)
    assert recipe_widgets.rounding_choice(clip) == "clip"
    widgets = recipe_widgets.widgets_of_recipe(clip)
    assert recipe_widgets.recipe_of_widgets(clip.bits, *widgets[:-1], 0.35) == clip
    with pytest.raises(ValueError, match="no 7 steps with checked=False"):
        recipe_widgets.rounding_choice(Recipe(rounding_steps=7))


def test_describe():
    assert Recipe(ratio=0.002, damp=0.1, rotation="hadamard").describe() == (
        "0.20 % kept, damping 10 %, rotated (Hadamard)"
    )
    assert Recipe(
        group_size=64, rounding_steps=100, rounding_check=True, distill_epochs=2
    ).describe() == (
        "0.35 % kept, damping 1 %, scales per 64 inputs, rounding tuned 100 steps, checked, "
        "scales distilled 2 epochs"
    )


def test_cli_quantize_flags_are_the_recipes_fields_with_its_defaults():
    import argparse

    from tacq.cli.parser import build_parser
    from tacq.cli.recipe_flags import flag

    sub = build_parser()._subparsers._group_actions[0].choices["quantize"]
    actions = {a.dest: a for a in sub._actions}
    for f in fields(Recipe):
        action = actions[f.name]
        assert flag(f.name) in action.option_strings, f.name
        assert action.default is None  # a preset (--settings) fills what was not given
    plain = argparse.ArgumentParser()
    from tacq.cli.recipe_flags import add_recipe_flags

    add_recipe_flags(plain)
    assert vars(plain.parse_args([])) == Recipe().to_config()  # the Recipe's own defaults


def test_a_checkpoint_config_of_a_recipe_without_new_fields_is_unchanged():
    """act_order and fit_text are written only when set: an export of a recipe that does
    not use them is byte-identical to one written before they existed."""
    spec = VariantSpec.of(Recipe(bits=3, damp=0.1), task="t", examples="e", base_model="m")
    assert list(spec.to_config()) == [
        "bits", "ratio", "metric", "method", "group_size", "task", "examples", "base_model",
        "damp", "rounding_steps", "rounding_check", "rotation", "rotation_seed",
        "distill_epochs",
    ]  # fmt: skip
    with_both = VariantSpec.of(Recipe(act_order=True, fit_text="task"))
    config = with_both.to_config()
    assert config["act_order"] is True and config["fit_text"] == "task"
    assert VariantSpec.from_config(config) == with_both
    assert VariantSpec.from_config(spec.to_config()) == spec


@pytest.mark.parametrize("rotation, act_order", [(None, False), ("hadamard", False), (None, True)])
@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_an_export_of_a_recipe_is_byte_identical_to_the_primitives_run_by_hand(
    tiny_lm, tiny_task, tmp_path, rotation, act_order
):
    """Study.quantize(recipe) writes the same checkpoint, byte for byte, as GPTQ's block
    walk run directly with the settings spelled out and the spec written field by field,
    as Study.quantize did before the Recipe."""
    from tacq.formats.export import save_packed
    from tacq.formats.grid import GPTQConfig
    from tacq.quant.quantize import quantize_model
    from tacq.quant.rotation import quantize_rotated
    from tacq.quant.variant import build_variant
    from tacq.study.workflow import Study

    study = Study(tiny_lm, tiny_task)
    study.collect()
    recipe = Recipe(
        bits=3, ratio=0.02, group_size=32, damp=0.1, rotation=rotation, act_order=act_order
    )
    v = study.quantize(recipe)
    sel = recipe.selection
    cfg = GPTQConfig(bits=3, group_size=32, damp=0.1, act_order=act_order)
    ranking = study.ranking(sel)
    batches = study.batches(answer_only=False)
    if rotation:
        res = quantize_rotated(tiny_lm.model, batches, cfg, ranking.masks(0.02), kind=rotation)
    else:
        res = quantize_model(tiny_lm.model, batches, cfg, ranking.masks(0.02))
    spec = VariantSpec(
        3, 0.02, "tacq", "gptq", 32, task=tiny_task.name, examples=study.digest(),
        base_model=tiny_lm.fingerprint, damp=0.1, rotation=rotation, act_order=act_order,
    )  # fmt: skip
    by_hand = build_variant(tiny_lm.model, res, spec, ranking.counts(0.02).tolist())
    a = save_packed(tmp_path / "recipe", tiny_lm, v)
    b = save_packed(tmp_path / "by-hand", tiny_lm, by_hand)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and "model.safetensors" in names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert v.spec.act_order == act_order and v.name.endswith("-ao-2.00%") == act_order
