"""Packed checkpoints: exact bit packing, identical reload, clear errors on damaged files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from tacq.circuit.select import Selection
from tacq.errors import TacqError
from tacq.formats.export import (
    WEIGHTS_FILE,
    folder_bytes,
    load_quantized,
    save_dequantized,
    save_packed,
)
from tacq.formats.layer_store import PACK, UNPACK, packed_len
from tacq.quant.recipe import Recipe
from tacq.study.workflow import Study
from tests.tiny import fp16_exact


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 10, 31, 1000, 1001])
def test_pack_round_trip(bits, n):
    g = torch.Generator().manual_seed(n)
    codes = torch.randint(0, 2**bits, (n,), generator=g, dtype=torch.uint8)
    packed = PACK[bits](codes)
    assert packed.dtype == torch.uint8 and len(packed) == packed_len(n, bits)
    assert torch.equal(UNPACK[bits](packed, n), codes)


def test_pack_extremes():
    for bits in (2, 3, 4):
        codes = torch.tensor([0, 2**bits - 1] * 5, dtype=torch.uint8)
        assert torch.equal(UNPACK[bits](PACK[bits](codes), 10), codes)


@pytest.fixture(scope="module")
def _built(tmp_path_factory):
    """One 3-bit variant and its export for the whole module (building it is most of each
    test's time); tests get a copy of the folder, so tampering stays their own."""
    from tacq.models import LoadedModel
    from tests.conftest import _char_tokenizer, make_tiny_task
    from tests.tiny import make_tiny_llama

    home = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TACQ_HOME", str(home / "tacq_home"))
        lm = LoadedModel(make_tiny_llama(), _char_tokenizer(), "tiny", "memory", "tiny-0")
        fp16_exact(lm.model)
        study = Study(lm, make_tiny_task())
        study.collect()
        variant = study.quantize(Recipe.of(Selection("tacq", bits=3, ratio=0.02)))
        folder = save_packed(home / "packed", lm, variant)
    return lm, study, variant, folder


@pytest.fixture
def packed_variant(_built, tmp_path):
    """The module's variant with a copy of its export that this test may damage."""
    _, study, variant, folder = _built
    return study, variant, Path(shutil.copytree(folder, tmp_path / "packed"))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_export_load_gives_identical_logits(packed_variant):
    study, variant, folder = packed_variant
    loaded = load_quantized(folder)
    ids = torch.randint(3, 99, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(_logits(loaded, ids), _logits(variant.model, ids))
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert (qc["bits"], qc["ratio"], qc["metric"], qc["quant_method"]) == (3, 0.02, "tacq", "tacq")
    assert qc["examples"] == study.digest() and qc["tacq_version"]


def test_on_disk_size_matches_size_report(packed_variant):
    _, variant, folder = packed_variant
    on_disk = (folder / WEIGHTS_FILE).stat().st_size
    # tensor data must match the honest byte count; safetensors adds a JSON header
    assert variant.size.total_bytes <= on_disk < variant.size.total_bytes * 1.01 + 16_384
    assert folder_bytes(folder) > on_disk


def test_dequantized_export_loads_with_plain_transformers(packed_variant, tmp_path):
    from transformers import AutoModelForCausalLM

    _, variant, _ = packed_variant
    lm = SimpleNamespace(tokenizer=SimpleNamespace(save_pretrained=lambda p: None))
    out = save_dequantized(tmp_path / "deq", lm, variant)
    plain = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    ids = torch.randint(3, 99, (1, 12), generator=torch.Generator().manual_seed(1))
    # the grid values are rounded to fp16 on the way out: close, not identical
    torch.testing.assert_close(_logits(plain, ids), _logits(variant.model, ids), rtol=0, atol=2e-3)


def _tamper(folder, edit):
    path = folder / WEIGHTS_FILE
    t = load_file(str(path))
    edit(t)
    save_file(t, str(path), metadata={"format": "tacq-packed"})


Q = "model.layers.0.self_attn.q_proj"


def _with_kept(variant) -> str:
    return next(n for n, lq in variant.result.layers.items() if lq.keep_mask.any())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t, q: t.__setitem__(f"{q}.codes", t[f"{q}.codes"][:-3]), "shape"),
        (lambda t, q: t.__setitem__(f"{q}.scale", t[f"{q}.scale"].float()), "dtype"),
        (lambda t, q: t.pop(f"{q}.zero"), "lacks tensor"),
        (lambda t, q: t[f"{q}.kept_cols"].__setitem__(0, 30000), "out of range"),
        (lambda t, q: t[f"{q}.kept_cols"].__setitem__(0, -1), "out of range"),
        (lambda t, q: t[f"{q}.kept_counts"].__setitem__(-1, 60000), "out of range"),
        (
            lambda t, q: t[f"{q}.kept_counts"].__setitem__(0, int(t[f"{q}.kept_counts"][0]) + 1),
            "range",
        ),
        (lambda t, q: t.__setitem__(f"{q}.kept_counts", t[f"{q}.kept_counts"].int()), "dtype"),
        (lambda t, q: t.__setitem__(f"{q}.zero", t[f"{q}.zero"][:-1]), "shape"),
        (lambda t, q: t.__setitem__("model.norm.weight", t["model.norm.weight"][:3]), "wrong"),
    ],
)
def test_tampered_checkpoint_gives_clear_error(packed_variant, edit, message):
    _, variant, folder = packed_variant
    name = _with_kept(variant)
    _tamper(folder, lambda t: edit(t, name))
    with pytest.raises(TacqError, match=message):
        load_quantized(folder)


def test_truncated_file_and_bad_bits(packed_variant):
    _, _, folder = packed_variant
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["quantization_config"]["layers"][Q][2] = 5
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(TacqError, match="bits must be 2, 3 or 4"):
        load_quantized(folder)
    path = folder / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(TacqError, match="damaged or truncated"):
        load_quantized(folder)


def test_not_a_tacq_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(TacqError):
        load_quantized(tmp_path)


def test_reload_onto_its_base_shares_it_and_refuses_another(packed_variant, _built):
    from tacq.formats.packed import packed_modules
    from tacq.quant.variant import load_variant
    from tests.tiny import make_tiny_llama

    _, variant, folder = packed_variant
    tiny_lm = _built[0]
    back = load_variant(folder, tiny_lm.model)
    assert back.model.model.embed_tokens.weight is tiny_lm.model.model.embed_tokens.weight
    assert len(packed_modules(back.model)) == len(variant.result.layers)
    ids = torch.randint(3, 99, (2, 16), generator=torch.Generator().manual_seed(1))
    assert torch.equal(_logits(back.model, ids), _logits(variant.model, ids))
    with pytest.raises(TacqError, match="another model"):
        load_variant(folder, make_tiny_llama(seed=5))
