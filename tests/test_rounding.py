"""Rounding tuned after masked GPTQ: one level at most, kept weights and qparams untouched,
the block loss never worse, the model left as it was."""

from __future__ import annotations

import pytest
import torch

from tacq.data.calibration import hold_aside
from tacq.errors import TacqError
from tacq.formats.grid import GPTQConfig
from tacq.models import decoder_layers
from tacq.quant.quantize import _run_block, capture_block_inputs, quantize_model
from tacq.quant.recipe import Recipe
from tacq.quant.rounding import RoundingConfig, model_loss, tune_rounding
from tests.test_quantize import _batches, _masks


def _block_mse(model, result, batches) -> list[float]:
    """Each block's output error (quantized model on its own inputs vs fp on fp inputs)."""
    fp = capture_block_inputs(model, batches)
    q = fp
    errors = []
    for i, block in enumerate(decoder_layers(model)):
        originals = {n: p.detach().clone() for n, p in block.named_parameters()}
        target = _run_block(block, fp)
        with torch.no_grad():
            for name, lq in result.layers.items():
                prefix = f"model.layers.{i}."
                if name.startswith(prefix):
                    block.get_submodule(name[len(prefix) :]).weight.copy_(lq.dequantize())
        out = _run_block(block, q)
        with torch.no_grad():
            for n, p in block.named_parameters():
                p.copy_(originals[n])
        err = sum(float(((o - t)[m]).pow(2).sum()) for o, t, (_, _, m) in zip(out, target, q))
        errors.append(err / sum(int(m.sum()) * o.shape[-1] for o, (_, _, m) in zip(out, q)))
        fp = [(t, kw, m) for t, (_, kw, m) in zip(target, fp)]
        q = [(o, kw, m) for o, (_, kw, m) in zip(out, q)]
    return errors


@pytest.mark.parametrize("group_size", [None, 32])
@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_tuned_rounding_moves_one_level_and_keeps_the_rest(tiny_llama, group_size):
    before = {n: p.clone() for n, p in tiny_llama.state_dict().items()}
    batches, masks = _batches(), _masks(tiny_llama)
    cfg = GPTQConfig(bits=2, group_size=group_size)
    gptq = quantize_model(tiny_llama, batches, cfg, masks)
    rc = RoundingConfig(steps=100, lr=0.02, start="gptq", scales=False)
    tuned = tune_rounding(tiny_llama, batches, gptq, rc)
    for n, p in tiny_llama.state_dict().items():  # the source model is untouched
        assert torch.equal(p, before[n]), n
    moved = 0
    for name, lq in gptq.layers.items():
        t = tuned.layers[name]
        assert torch.equal(t.scale, lq.scale) and torch.equal(t.zero, lq.zero)
        assert torch.equal(t.keep_mask, lq.keep_mask)
        assert torch.equal(t.kept_values, lq.kept_values)
        assert torch.equal(t.codes[lq.keep_mask], lq.codes[lq.keep_mask])
        step = (t.codes.int() - lq.codes.int()).abs()
        assert int(step.max()) <= 1
        assert int(t.codes.max()) <= 3
        moved += int(step.sum())
    assert moved > 0  # the search did change some codes
    assert len(tuned.logs["rounding"].block_losses) == len(decoder_layers(tiny_llama))
    for b, a in tuned.logs["rounding"].block_losses:
        assert a <= b
    assert any(a < b for b, a in tuned.logs["rounding"].block_losses)


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_tuned_rounding_lowers_the_calibration_block_error(tiny_llama):
    batches = _batches()
    gptq = quantize_model(tiny_llama, batches, GPTQConfig(bits=2), _masks(tiny_llama))
    rc = RoundingConfig(steps=100, lr=0.02, start="gptq", scales=False)
    tuned = tune_rounding(tiny_llama, batches, gptq, rc)
    err_gptq = _block_mse(tiny_llama, gptq, batches)
    err_tuned = _block_mse(tiny_llama, tuned, batches)
    assert err_tuned[-1] < err_gptq[-1]  # the last block's output is closer to fp's
    # the recorded losses are the ones this measurement sees (block 0: same inputs)
    assert tuned.logs["rounding"].block_losses[0][0] == pytest.approx(err_gptq[0], rel=1e-4)
    assert tuned.logs["rounding"].block_losses[0][1] == pytest.approx(err_tuned[0], rel=1e-4)


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_rtn_start_with_scales_beats_gptq_or_keeps_it(tiny_llama):
    batches = _batches()
    cfg = GPTQConfig(bits=2, group_size=32)
    gptq = quantize_model(tiny_llama, batches, cfg, _masks(tiny_llama))
    rc = RoundingConfig(steps=100, lr=0.02, start="rtn", scales=True)
    tuned = tune_rounding(tiny_llama, batches, gptq, rc)
    scaled = 0
    for (before, after), i in zip(tuned.logs["rounding"].block_losses, range(2)):
        names = [n for n in gptq.layers if n.startswith(f"model.layers.{i}.")]
        same = all(torch.equal(tuned.layers[n].codes, gptq.layers[n].codes) for n in names)
        assert after <= before and (after < before or same)  # GPTQ's kept when not beaten
        for n in names:
            t, g = tuned.layers[n], gptq.layers[n]
            assert t.scale.shape == g.scale.shape and torch.equal(t.zero, g.zero)
            ratio = t.scale / g.scale
            assert float(ratio.min()) >= 0.5 - 1e-6 and float(ratio.max()) <= 1.5 + 1e-6
            scaled += int((ratio != 1).sum())
            assert torch.equal(t.kept_values, g.kept_values)
    assert scaled > 0
    err = _block_mse(tiny_llama, tuned, batches)
    assert err[0] == pytest.approx(tuned.logs["rounding"].block_losses[0][1], rel=1e-4)


@pytest.mark.parametrize("kind", ["hadamard", "haar"])
@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_rotated_rounding_tunes_the_rotated_grid_and_keeps_the_kept_weights(tiny_llama, kind):
    from tacq.formats.orthogonal import Rotation
    from tacq.quant.rotation import quantize_rotated
    from tacq.quant.rounding import _Tunable

    batches, masks = _batches(), _masks(tiny_llama)
    rot = quantize_rotated(tiny_llama, batches, GPTQConfig(bits=2, group_size=32), masks, kind=kind)
    name, lq = next((n, q) for n, q in rot.layers.items() if q.keep_mask.any())
    # untouched offsets from GPTQ's codes give back GPTQ's weight: grid R^T plus the kept ones
    t = _Tunable.start(lq, tiny_llama.get_submodule(name).weight, RoundingConfig(start="gptq"))
    assert torch.allclose(t.weight(torch.float32), lq.dequantize(), atol=1e-5)
    # rtn starts from the rotated residual W_r R on the grid, not from W
    W = tiny_llama.get_submodule(name).weight.detach().float()
    t = _Tunable.start(lq, W, RoundingConfig(start="rtn"))
    R = Rotation.draw(W.shape[1], lq.rotation[1], lq.rotation[0])
    residual = R.apply(torch.where(lq.keep_mask, 0.0, W))
    assert torch.allclose(t.levels * lq.scale.repeat_interleave(32, 1), residual, atol=1e-5)
    rc = RoundingConfig(steps=100, lr=0.02, start="rtn", scales=True)
    tuned = tune_rounding(tiny_llama, batches, rot, rc)
    changed = 0
    for n, g in rot.layers.items():
        q = tuned.layers[n]
        assert q.rotation == g.rotation and torch.equal(q.keep_mask, g.keep_mask)
        assert torch.equal(q.kept_values, g.kept_values)
        changed += int((q.codes != g.codes).sum())
    assert changed > 0
    assert any(a < b for b, a in tuned.logs["rounding"].block_losses)
    err = _block_mse(tiny_llama, tuned, batches)  # the stored codes are what was tuned
    assert err[0] == pytest.approx(tuned.logs["rounding"].block_losses[0][1], rel=1e-4)
    assert err[0] <= _block_mse(tiny_llama, rot, batches)[0]


def test_rounding_needs_a_quantized_model_and_a_step(tiny_llama):
    with pytest.raises(TacqError, match="at least 1"):
        RoundingConfig(steps=0)
    with pytest.raises(TacqError, match="starts from one of"):
        RoundingConfig(start="hqq")
    gptq = quantize_model(tiny_llama, _batches(), GPTQConfig(bits=3))
    gptq.layers.pop(next(iter(gptq.layers)))
    with pytest.raises(TacqError, match="quantize the model first"):
        tune_rounding(tiny_llama, _batches(), gptq, RoundingConfig(steps=1))


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_study_variant_with_tuned_rounding_is_named_sized_and_exported(
    tmp_path, tiny_lm, tiny_task
):
    from tacq.circuit.select import Selection
    from tacq.formats.export import save_packed
    from tacq.quant.variant import load_variant
    from tacq.study.workflow import Study
    from tests.tiny import fp16_exact

    fp16_exact(tiny_lm.model)
    study = Study(tiny_lm, tiny_task)
    study.collect()
    sel = Selection("tacq", 2, 0.01)
    plain = study.quantize(Recipe.of(sel))
    batches = study.batches(answer_only=False)  # the default adds the generic text: slower
    tuned = study.quantize(Recipe.of(sel, rounding_steps=100), fit=(batches, []))
    assert tuned.name == "tacq-2bit-r100-1.00%" and tuned.spec.rounding_steps == 100
    assert tuned.size == plain.size  # the same format: codes, one scale per row, kept weights
    assert len(tuned.result.logs["rounding"].block_losses) == len(
        decoder_layers(tiny_lm.model)
    )  # kept
    a, b = plain.result.layers, tuned.result.layers
    for n, lq in a.items():  # the same circuit at the same 16-bit values
        assert torch.equal(lq.keep_mask, b[n].keep_mask), n
        assert torch.equal(lq.kept_values, b[n].kept_values), n
    assert any(not torch.equal(lq.dequantize(), b[n].dequantize()) for n, lq in a.items())
    save_packed(tmp_path / "r", tiny_lm, tuned)
    back = load_variant(tmp_path / "r")
    assert back.spec == tuned.spec and back.name == tuned.name
    for n, lq in b.items():  # export -> load is bit-identical, tuned scales included
        assert torch.equal(back.result.layers[n].dequantize(), lq.dequantize()), n
    # with the grid's ends tuned too: zeros move, the format and its round trip do not
    clip = study.quantize(Recipe.of(sel, rounding_steps=100, rounding_clip=True), fit=(batches, []))
    assert clip.name == "tacq-2bit-r100-clip-1.00%" and clip.size == plain.size
    save_packed(tmp_path / "c", tiny_lm, clip)
    back = load_variant(tmp_path / "c")
    assert back.spec == clip.spec and back.spec.rounding_clip
    for n, lq in clip.result.layers.items():
        assert torch.equal(back.result.layers[n].dequantize(), lq.dequantize()), n
    with pytest.raises(TacqError, match="not RTN"):
        study.quantize(Recipe.of(Selection("tacq", 2, 0.0), method="rtn", rounding_steps=1))


def test_default_rounding_text_is_the_examples_plus_the_generic_text_past_the_ppl_window(
    tiny_lm, tiny_task, monkeypatch
):
    import tacq.quant.pipeline as pipeline
    import tacq.study.workflow as workflow
    from tacq.circuit.gradients import GradientConfig
    from tacq.circuit.select import Selection
    from tacq.data.calibration import PPL_WINDOW_TOKENS
    from tacq.data.tasks import generic_text

    seen = []

    def spy(model, batches, result, cfg, progress=None, check=None):
        seen.append((batches, check))
        return result

    monkeypatch.setattr(pipeline, "tune_rounding", spy)
    study = workflow.Study(tiny_lm, tiny_task)
    study.quantize(Recipe.of(Selection("tacq", 3, 0.0), rounding_steps=1))
    calib = study.batches(answer_only=False)
    ((batches, check),) = seen
    assert check is None
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(batches, calib))
    extra = sum(b.n_tokens for b in batches[len(calib) :])
    text_ids = len(tiny_lm.tokenizer(generic_text(), add_special_tokens=False)["input_ids"])
    unread = text_ids - PPL_WINDOW_TOKENS  # the part perplexity is not scored on
    assert 0.9 * unread < extra <= unread  # all of it but a last partial chunk
    # checked: every 4th calibration batch leaves the fit and is checked on its answers
    with monkeypatch.context() as m:  # refused before GPTQ runs, not minutes after
        m.setattr(study.references, "get", lambda *a, **k: pytest.fail("GPTQ ran"))
        with pytest.raises(TacqError, match="holds a batch of 8 calibration examples aside"):
            study.quantize(
                Recipe.of(Selection("tacq", 3, 0.0), rounding_steps=1, rounding_check=True)
            )
    study = workflow.Study(tiny_lm, tiny_task, grad_cfg=GradientConfig(batch_size=2))
    calib = study.batches(answer_only=False)
    study.quantize(Recipe.of(Selection("tacq", 3, 0.0), rounding_steps=1, rounding_check=True))
    batches, check = seen[1]
    answers = study.batches(answer_only=True)
    held = list(range(3, len(calib), 4)) or [len(calib) - 1]
    assert [b.input_ids.tolist() for b in check] == [calib[i].input_ids.tolist() for i in held]
    assert all(torch.equal(c.loss_mask, answers[i].loss_mask) for c, i in zip(check, held))
    fit = [b for i, b in enumerate(calib) if i not in held]
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(batches, fit))
    assert sum(b.n_tokens for b in batches) - sum(b.n_tokens for b in fit) == extra


def _answer_batches(seed=1):
    from tacq.data.batches import Encoded, make_batches

    g = torch.Generator().manual_seed(seed)
    enc = [Encoded(tuple(torch.randint(3, 128, (n,), generator=g).tolist()), 4) for n in (14, 19)]
    return make_batches(enc, batch_size=2, pad_id=0, answer_only=True)


def _loss_with(model, result, batches) -> float:
    """The model's loss on batches with result's weights in place (then restored)."""
    originals = {n: model.get_submodule(n).weight.detach().clone() for n in result.layers}
    try:
        with torch.no_grad():
            for n, lq in result.layers.items():
                model.get_submodule(n).weight.copy_(lq.dequantize())
        return model_loss(model, batches)
    finally:
        with torch.no_grad():
            for n, w in originals.items():
                model.get_submodule(n).weight.copy_(w)


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_checked_rounding_never_raises_the_held_aside_loss(tiny_llama):
    before = {n: p.clone() for n, p in tiny_llama.state_dict().items()}
    batches, check = _batches(), _answer_batches()
    gptq = quantize_model(tiny_llama, batches, GPTQConfig(bits=2), _masks(tiny_llama))
    tuned = tune_rounding(tiny_llama, batches, gptq, RoundingConfig(100, check=True), check=check)
    for n, p in tiny_llama.state_dict().items():  # the whole model is restored
        assert torch.equal(p, before[n]), n
    first, last = _loss_with(tiny_llama, gptq, check), _loss_with(tiny_llama, tuned, check)
    losses = tuned.logs["rounding"].check_losses
    assert len(losses) == len(decoder_layers(tiny_llama))
    assert losses[0][0] == pytest.approx(first, rel=1e-5)
    kept = [min(pair) for pair in losses]  # each block starts where the last one ended
    for i in range(1, len(losses)):
        assert losses[i][0] == pytest.approx(kept[i - 1], rel=1e-5)
    assert last == pytest.approx(kept[-1], rel=1e-5) and last <= first


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_checked_rounding_keeps_gptq_where_the_held_aside_loss_rises(tiny_llama, monkeypatch):
    import tacq.quant.rounding as rounding

    calls = iter(range(100))
    monkeypatch.setattr(rounding, "model_loss", lambda model, batches: float(next(calls)))
    batches = _batches()
    gptq = quantize_model(tiny_llama, batches, GPTQConfig(bits=2), _masks(tiny_llama))
    cfg = RoundingConfig(100, check=True)
    tuned = tune_rounding(tiny_llama, batches, gptq, cfg, check=_answer_batches())
    assert any(
        a < b
        for b, a in tune_rounding(tiny_llama, batches, gptq, cfg).logs["rounding"].block_losses
    )
    for n, lq in gptq.layers.items():  # every tuning made the check worse: GPTQ's stays
        assert torch.equal(tuned.layers[n].codes, lq.codes), n
        assert torch.equal(tuned.layers[n].scale, lq.scale), n
    assert all(a == b for b, a in tuned.logs["rounding"].block_losses)


def test_hold_aside_takes_every_fourth_batch():
    full, answers = list("abcdefghij"), list("ABCDEFGHIJ")
    assert hold_aside(full, answers) == (list("abcefgij"), list("DH"))
    assert hold_aside(full[:2], answers[:2]) == (["a"], ["B"])
    assert hold_aside(full[:1], answers[:1]) == (["a"], [])
    with pytest.raises(TacqError, match="two loss masks"):
        hold_aside(full, answers[:3])


def test_app_rounding_choices_each_name_a_config():
    from app.recipe_widgets import ROUNDING_CHOICES, ROUNDINGS

    assert [v for _, v in ROUNDING_CHOICES] == ["gptq", "checked", "clip", "tuned"]
    assert set(ROUNDINGS) == {"gptq", "checked", "tuned", "clip"}  # none falls back silently
    assert ROUNDINGS == {
        "gptq": (0, False, False),
        "tuned": (100, False, False),
        "checked": (100, True, False),
        "clip": (100, True, True),
    }


def _layer_quant(bits: int, group_size: int | None, seed: int = 0):
    """GPTQ-like qparams of a random (12, 64) weight, one kept weight per row."""
    from tacq.formats.grid import LayerQuant, find_group_params, find_params, per_column

    g = torch.Generator().manual_seed(seed)
    W = torch.randn(12, 64, generator=g)
    cfg = GPTQConfig(bits=bits, group_size=group_size)
    mask = torch.zeros_like(W, dtype=torch.bool)
    mask[torch.arange(12), torch.randint(0, 64, (12,), generator=g)] = True
    scale, zero = (find_group_params if group_size else find_params)(W, mask, cfg)
    s, z = (per_column(t, 64, group_size) for t in (scale, zero))
    codes = torch.clamp(torch.round(W / s) + z, 0, cfg.maxq).to(torch.uint8)
    lq = LayerQuant(codes, scale, zero, mask, W[mask].half(), bits, None, group_size)
    return lq, W


@pytest.mark.parametrize("group_size", [None, 32])
def test_clip_factors_at_zero_give_gptqs_grid_and_move_scale_and_zero_together(group_size):
    from tacq.quant.rounding import _Tunable

    lq, W = _layer_quant(3, group_size)
    plain = _Tunable.start(lq, W, RoundingConfig(steps=1, scales=False))
    clip = _Tunable.start(lq, W, RoundingConfig(steps=1, clip=True))
    assert len(clip.params()) == 3 and not clip.factor.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(clip.weight(torch.float32), plain.weight(torch.float32))
        same = clip.result()
        assert torch.equal(same.zero, lq.zero) and torch.equal(same.codes, plain.result().codes)
        torch.testing.assert_close(same.scale, lq.scale, rtol=1e-3, atol=0)
        clip.clip_max.fill_(-0.25)  # the top of every grid pulled in by a quarter
        clip.clip_min.fill_(0.3)  # the bottom pushed out: the zero moves up
    moved = clip.result()
    maxq = 2**lq.bits - 1
    assert torch.equal(moved.zero, moved.zero.round()) and int(moved.zero.max()) <= maxq
    assert (moved.zero >= lq.zero).all() and (moved.zero > lq.zero).any()
    assert torch.equal(moved.scale, moved.scale.half().float())  # as export stores it
    top = (maxq - lq.zero) * lq.scale * 0.75
    torch.testing.assert_close(
        moved.scale, (top + lq.zero * lq.scale * 1.3) / maxq, rtol=1e-3, atol=0
    )
    # what the search fit is what the result dequantizes to (to the fp16 rounding of scales)
    with torch.no_grad():
        torch.testing.assert_close(
            moved.dequantize(), clip.weight(torch.float32), rtol=2e-3, atol=2e-3
        )
    assert torch.equal(moved.dequantize()[lq.keep_mask], lq.kept_values.float())


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_clip_tuning_moves_zeros_and_scales_and_never_ends_worse(tiny_llama):
    batches = _batches()
    gptq = quantize_model(
        tiny_llama, batches, GPTQConfig(bits=2, group_size=32), _masks(tiny_llama)
    )
    rc = RoundingConfig(steps=60, lr=0.02, clip=True)
    tuned = tune_rounding(tiny_llama, batches, gptq, rc)
    losses = tuned.logs["rounding"].block_losses
    assert all(a <= b for b, a in losses) and any(a < b for b, a in losses)
    zeros_moved = scales_moved = 0
    for name, lq in gptq.layers.items():
        t = tuned.layers[name]
        assert t.zero.shape == lq.zero.shape and torch.equal(t.zero, t.zero.round())
        assert int(t.zero.min()) >= 0 and int(t.zero.max()) <= 3 and int(t.codes.max()) <= 3
        assert torch.equal(t.kept_values, lq.kept_values) and torch.equal(t.keep_mask, lq.keep_mask)
        zeros_moved += int((t.zero != lq.zero).sum())
        scales_moved += int((t.scale != lq.scale).sum())
    assert zeros_moved > 0 and scales_moved > 0
    assert Recipe.from_key("tacq_g32_r60c_clip", 2).rounding_clip
