"""Scales distilled end to end from the fp model: only scales (and optionally kept values)
move, the fit KL drops, the check never ends worse, the source model is left as it was."""

from __future__ import annotations

import copy

import pytest
import torch

from tacq.errors import TacqError
from tacq.formats.grid import GPTQConfig
from tacq.quant.distill import DistillConfig, _kl_to_teacher, _Scaled, tune_scales
from tacq.quant.quantize import quantize_model
from tacq.quant.recipe import Recipe
from tacq.quant.rotation import quantize_rotated
from tacq.quant.rounding import model_loss
from tests.test_quantize import _batches, _masks


def _quantized(model, result):
    out = copy.deepcopy(model)
    for name, lq in result.layers.items():
        out.get_submodule(name).weight.data = lq.dequantize()
    return out


@torch.no_grad()
def _fit_kl(model, result, batches) -> float:
    q = _quantized(model, result)
    total = 0.0
    for b in batches:
        teacher = torch.log_softmax(model(input_ids=b.input_ids).logits.float(), -1)
        mask = b.attention_mask.float()
        logits = q(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        total += float(_kl_to_teacher(logits, teacher, mask))
    return total / len(batches)


@pytest.mark.parametrize("rotated", [False, True])
@pytest.mark.parametrize("group_size", [None, 32])
def test_the_untuned_weight_is_the_dequantized_one(tiny_llama, rotated, group_size):
    cfg, masks = GPTQConfig(bits=2, group_size=group_size), _masks(tiny_llama)
    if rotated:
        res = quantize_rotated(tiny_llama, _batches(), cfg, masks, kind="hadamard")
    else:
        res = quantize_model(tiny_llama, _batches(), cfg, masks)
    for lq in res.layers.values():
        s = _Scaled.start(lq, torch.device("cpu"), tune_kept=True)
        torch.testing.assert_close(s.weight(torch.float32), lq.dequantize(), rtol=0, atol=1e-6)
        r = s.result()  # no step taken: the same layer back
        assert torch.equal(r.scale, lq.scale) and torch.equal(r.kept_values, lq.kept_values)


@pytest.mark.parametrize("rotated", [False, True])
def test_distilling_moves_only_the_scales_and_lowers_the_fit_kl(tiny_llama, rotated):
    before = {n: p.clone() for n, p in tiny_llama.state_dict().items()}
    batches, masks, cfg = _batches(), _masks(tiny_llama), GPTQConfig(bits=2)
    if rotated:
        gptq = quantize_rotated(tiny_llama, batches, cfg, masks, kind="hadamard")
    else:
        gptq = quantize_model(tiny_llama, batches, cfg, masks)
    tuned = tune_scales(tiny_llama, gptq, batches, DistillConfig(epochs=10, lr=1e-2))
    for n, p in tiny_llama.state_dict().items():  # the source model is untouched
        assert torch.equal(p, before[n]), n
    assert not any(p.requires_grad for p in tiny_llama.parameters())  # flags restored
    moved = 0
    for name, lq in gptq.layers.items():
        t = tuned.layers[name]
        assert torch.equal(t.codes, lq.codes) and torch.equal(t.zero, lq.zero)
        assert torch.equal(t.keep_mask, lq.keep_mask)
        assert torch.equal(t.kept_values, lq.kept_values)
        assert t.rotation == lq.rotation and t.group_size == lq.group_size
        assert torch.equal(t.scale, t.scale.half().float())  # as the export stores them
        moved += int((t.scale != lq.scale).sum())
    assert moved > 0
    assert _fit_kl(tiny_llama, tuned, batches) < 0.9 * _fit_kl(tiny_llama, gptq, batches)


def test_the_kept_values_move_only_when_asked(tiny_llama):
    batches, masks = _batches(), _masks(tiny_llama)
    gptq = quantize_model(tiny_llama, batches, GPTQConfig(bits=2), masks)
    tuned = tune_scales(tiny_llama, gptq, batches, DistillConfig(epochs=5, lr=1e-2, kept=True))
    changed = sum(
        int((tuned.layers[n].kept_values != lq.kept_values).sum()) for n, lq in gptq.layers.items()
    )
    assert changed > 0
    for n, lq in gptq.layers.items():
        assert torch.equal(tuned.layers[n].keep_mask, lq.keep_mask)
        assert tuned.layers[n].kept_values.dtype == torch.float16


def test_the_check_never_ends_worse_than_the_start(tiny_llama):
    fit, masks = _batches(), _masks(tiny_llama)
    check = _batches(seed=5)  # other token sequences: what the fit does there is unknown
    gptq = quantize_model(tiny_llama, fit, GPTQConfig(bits=2), masks)
    start = model_loss(_quantized(tiny_llama, gptq), check)
    # a step so large the fit overshoots: the check then keeps an earlier epoch or the start
    for lr in (1e-2, 3.0):
        tuned = tune_scales(tiny_llama, gptq, fit, DistillConfig(epochs=4, lr=lr), check=check)
        got = model_loss(_quantized(tiny_llama, tuned), check)
        assert got <= start + 1e-4
        # the record says which epoch was kept, with its check loss (0: the start)
        assert len(tuned.logs["distill"].checks) == 5 and 0 <= tuned.logs["distill"].kept <= 4
        assert tuned.logs["distill"].checks[0] == pytest.approx(start, abs=1e-4)
        assert tuned.logs["distill"].checks[tuned.logs["distill"].kept] == min(
            tuned.logs["distill"].checks
        )
        assert got == pytest.approx(min(tuned.logs["distill"].checks), abs=1e-3)


def test_bad_settings_are_refused(tiny_llama):
    with pytest.raises(TacqError, match="at least 1 epoch"):
        DistillConfig(epochs=0)
    with pytest.raises(TacqError, match="must be positive"):
        DistillConfig(lr=0.0)
    gptq = quantize_model(tiny_llama, _batches(), GPTQConfig(bits=2), _masks(tiny_llama))
    with pytest.raises(TacqError, match="at least one calibration batch"):
        tune_scales(tiny_llama, gptq, [], DistillConfig())


def short_generic_text(monkeypatch) -> None:
    """The distillation fit takes the bundled generic text too: at one character per token
    on the tiny model that is over 100 batches an epoch; a few suffice to test the path.
    The fit reads it past the perplexity window: keep that and 2,000 characters after it."""
    import tacq.data.calibration as calibration

    text = calibration.generic_text()
    keep = calibration.PPL_WINDOW_TOKENS + 2000
    monkeypatch.setattr(calibration, "generic_text", lambda: text[:keep])


@pytest.fixture
def study(tiny_lm, tiny_task, monkeypatch):
    import functools

    from tacq.circuit.gradients import GradientConfig
    from tacq.study.workflow import Study
    from tests.tiny import fp16_exact

    fp16_exact(tiny_lm.model)
    short_generic_text(monkeypatch)
    # batches of 4: the 8 tiny examples leave one batch to hold aside for the check
    s = Study(tiny_lm, tiny_task, grad_cfg=functools.partial(GradientConfig, batch_size=4)())
    s.collect()
    return s


@pytest.mark.parametrize("rotation", [None, "hadamard"])
@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_a_distilled_variant_round_trips_bit_identically(study, tiny_lm, tmp_path, rotation):
    from tacq.circuit.select import Selection
    from tacq.formats.export import load_quantized, save_packed
    from tacq.formats.packed import packed_modules
    from tacq.quant.variant import load_variant

    sel = Selection("tacq", bits=2, ratio=0.02)
    plain = study.quantize(Recipe.of(sel, rotation=rotation))
    v = study.quantize(Recipe.of(sel, rotation=rotation, distill_epochs=2))
    assert v.spec.distill_epochs == 2 and "-e2" in v.name
    assert len(v.result.logs["distill"].checks) == 3 and v.result.logs["distill"].kept in (0, 1, 2)
    assert v.size.bpw_honest == plain.size.bpw_honest  # the same format, other scales
    mods, before = packed_modules(v.model), packed_modules(plain.model)
    assert all(torch.equal(mods[n].packed, before[n].packed) for n in mods)  # same codes
    ids = torch.randint(3, 99, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = v.model(input_ids=ids).logits
    folder = save_packed(tmp_path / "e2", tiny_lm, v)
    loaded = load_quantized(folder)
    for name, m in packed_modules(loaded).items():
        assert torch.equal(m.dequantize(), mods[name].dequantize()), name
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, got)
    back = load_variant(folder, tiny_lm.model)
    assert back.spec == v.spec and back.name == v.name


def test_distilling_needs_a_batch_to_hold_aside(study, tiny_lm, tiny_task):
    from tacq.circuit.select import Selection
    from tacq.study.workflow import Study

    fit, check = study.fit_batches(Recipe(distill_epochs=1), checked=True)  # 8 in 4s: one aside
    assert len(check) == 1 and check[0].input_ids.shape[0] == 4
    assert len(fit) > 1 and fit[0].input_ids.shape[0] == 4  # a task batch, then generic text
    assert all(b.input_ids.shape[0] == 1 for b in fit[1:])
    one_batch = Study(tiny_lm, tiny_task)  # batches of 8: nothing left to hold aside
    one_batch.collect()
    with pytest.raises(TacqError, match="hold a batch of 8"):
        one_batch.quantize(Recipe.of(Selection("tacq", 2, 0.02), distill_epochs=1))


def test_app_distill_choices_each_name_a_config():
    from app.recipe_widgets import DISTILL_CHOICES

    assert [v for _, v in DISTILL_CHOICES] == [0, 2]  # 0: none, the paper's
    assert DistillConfig(DISTILL_CHOICES[1][1]) == DistillConfig()  # the default, measured
