"""tacq.presets and the Quantize screen's Settings choice: every preset is a setting the
screen can make, and choosing one puts its values in the screen's inputs."""

from __future__ import annotations

import pytest

from app import quantize_tab
from app.circuit_tab import SLIDER_MAX_RATIO
from tacq.presets import MEASURED, PAPER, Preset, describe, preset


def _values(choices: list) -> set:
    return {v for _, v in choices}


@pytest.mark.parametrize("p", [PAPER, *MEASURED.values()])
def test_every_preset_is_a_setting_the_screen_offers(p):
    assert (p.group_size or 0) in _values(quantize_tab.GROUP_CHOICES)
    assert p.damp in _values(quantize_tab.DAMP_CHOICES)
    assert quantize_tab.rounding_choice(p) in _values(quantize_tab.ROUNDING_CHOICES)
    assert (p.rotation or "none") in _values(quantize_tab.BASIS_CHOICES)
    assert p.distill_epochs in _values(quantize_tab.DISTILL_CHOICES)
    assert 0 < p.ratio <= SLIDER_MAX_RATIO


def test_choosing_a_preset_fills_every_input():
    *inputs, line = quantize_tab.settings_values("measured", 2)
    p = MEASURED[2]
    assert inputs == ["tacq", "gptq", True, 0, p.damp, "gptq", p.rotation, 0, 0.2]
    assert (
        line
        == f"Settings: {describe(p)} (measured best at 2 bits). The ratio is on the Circuit slider."
    )
    *inputs, line = quantize_tab.settings_values("paper", 3)
    assert inputs == ["tacq", "gptq", True, 0, 0.01, "gptq", "none", 0, 0.35]
    assert "(the paper's)" in line


def test_rounding_choice_names_each_tuned_rounding_and_refuses_one_not_offered():
    assert (
        quantize_tab.rounding_choice(Preset(rounding_steps=100, rounding_check=True)) == "checked"
    )
    assert quantize_tab.rounding_choice(Preset(rounding_steps=100)) == "tuned"
    with pytest.raises(ValueError, match="no 7 checked=False"):
        quantize_tab.rounding_choice(Preset(rounding_steps=7))


def test_describe_and_unknown_names():
    assert describe(Preset(0.002, 0.1, rotation="hadamard")) == (
        "0.20 % kept, damping 10 %, rotated (Hadamard)"
    )
    assert describe(
        Preset(group_size=64, rounding_steps=100, rounding_check=True, distill_epochs=2)
    ) == (
        "0.35 % kept, damping 1 %, scales per 64 inputs, rounding tuned 100 steps, checked, "
        "scales distilled 2 epochs"
    )
    assert preset("measured", 4) == PAPER
    with pytest.raises(ValueError, match="paper or measured"):
        preset("best", 2)
