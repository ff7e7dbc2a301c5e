"""Format 2 of packed checkpoints: zeros stored at b bits, kept weights' rows as uint16 counts.

tests/fixtures/packed_v1_g32 was written by format 1 (uint8 zeros, int32 CSR row pointers),
a 2-bit g32 TaCQ variant of the tiny Llama at 2 % kept (five Linears keep nothing);
packed_v1_g32.expected.json holds digests of every Linear's codes, scales, zeros, keep mask
and kept values as that code read them back, and its logits on a fixed input. It must
still load to the same bits, and re-export as format 2 unchanged but smaller.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tacq.circuit.select import Selection
from tacq.errors import TacqError
from tacq.formats.export import FORMAT_VERSION, WEIGHTS_FILE, save_packed
from tacq.formats.layer_store import packed_len
from tacq.formats.sizes import NumberFormat, linear_bytes, size_report
from tacq.quant.recipe import Recipe
from tacq.quant.variant import VariantSpec, load_variant
from tacq.study.workflow import Study
from tests.tiny import fp16_exact

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "packed_v1_g32"
EXPECTED = json.loads((FIXTURE.parent / "packed_v1_g32.expected.json").read_text())
LINEAR_PARTS = ("codes", "scale", "zero", "kept_counts", "kept_rowptr", "kept_cols", "kept_values")


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def _layer_digests(variant) -> dict[str, dict]:
    return {
        name: {
            "codes": _digest(lq.codes.to(torch.uint8)),
            "scale": _digest(lq.scale.half()),
            "zero": _digest(lq.zero.to(torch.uint8)),
            "keep_mask": _digest(lq.keep_mask),
            "kept_values": _digest(lq.kept_values.half()),
            "kept": int(lq.keep_mask.sum()),
        }
        for name, lq in variant.result.layers.items()
    }


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor(EXPECTED["input_ids"])).logits.double()


def _tensor_bytes(folder: Path) -> dict[str, int]:
    """name -> bytes of each tensor's data in a packed folder's weights file."""
    sizes = {}
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
        for key in f.keys():
            x = f.get_slice(key)
            itemsize = {"U8": 1, "I16": 2, "U16": 2, "F16": 2, "I32": 4, "F32": 4}[x.get_dtype()]
            sizes[key] = itemsize * int(torch.tensor(x.get_shape()).prod())
    return sizes


def test_format1_grouped_checkpoint_loads_bit_identically():
    v = load_variant(FIXTURE)
    assert v.spec == VariantSpec(**EXPECTED["spec"]) and v.name == EXPECTED["name"]
    assert v.size.n_kept == EXPECTED["n_kept"]
    assert _layer_digests(v) == EXPECTED["layers"]
    logits = _logits(v.model)
    # fp32 sums in a CPU-dependent order; a misread code, zero or kept weight moves far more
    assert float(logits.sum()) == pytest.approx(EXPECTED["logits_sum"], abs=1e-5)
    assert float(logits.abs().sum()) == pytest.approx(EXPECTED["logits_abs_sum"], rel=1e-6)


def test_format1_checkpoint_reexports_as_format2_unchanged_and_smaller(tmp_path, tiny_lm):
    v = load_variant(FIXTURE)
    out = save_packed(tmp_path / "again", tiny_lm, v)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["format_version"] == FORMAT_VERSION == 2
    back = load_variant(out)
    assert _layer_digests(back) == EXPECTED["layers"]
    assert torch.equal(_logits(back.model), _logits(v.model))
    old, new = sum(_tensor_bytes(FIXTURE).values()), sum(_tensor_bytes(out).values())
    assert old == EXPECTED["size_total_bytes_format1"]
    assert new == back.size.total_bytes < old


@pytest.fixture
def grouped_export(tiny_lm, tmp_path):
    """A 3-bit g32 magnitude variant at 2 % kept and its export (no gradients needed)."""
    from tacq.data.tasks import Example, TaskSet

    fp16_exact(tiny_lm.model)
    ex = tuple(Example(f"{w} ->", f" {w[::-1]}") for w in ["hot", "big", "wet", "old"])
    study = Study(tiny_lm, TaskSet("t", ex[:2], ex[2:], "completion", "t"))
    v = study.quantize(Recipe.of(Selection("magnitude", bits=3, ratio=0.02, group_size=32)))
    return v, save_packed(tmp_path / "packed", tiny_lm, v)


def test_zeros_are_stored_at_b_bits_and_kept_rows_as_uint16_counts(grouped_export):
    v, folder = grouped_export
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
        keys = set(f.keys())
        for name, lq in v.result.layers.items():
            out_f, groups = lq.zero.shape
            zero = f.get_tensor(f"{name}.zero")
            assert zero.dtype == torch.uint8 and zero.shape == (packed_len(out_f * groups, 3),)
            assert f"{name}.kept_rowptr" not in keys
            if lq.keep_mask.any():
                counts = f.get_tensor(f"{name}.kept_counts")
                assert counts.dtype == torch.uint16 and counts.shape == (out_f,)
                assert torch.equal(counts.long(), lq.keep_mask.sum(1))


def test_size_report_counts_exactly_the_bytes_written(grouped_export):
    v, folder = grouped_export
    sizes = _tensor_bytes(folder)
    linear = {k: n for k, n in sizes.items() if k.rpartition(".")[2] in LINEAR_PARTS}
    assert sum(linear.values()) == v.size.code_bytes + v.size.qparam_bytes + v.size.kept_bytes
    assert sum(sizes.values()) - sum(linear.values()) == v.size.other_bytes
    for name, lq in v.result.layers.items():
        out_f, in_f = lq.codes.shape
        fmt = NumberFormat(3, 32)
        written = sum(n for k, n in linear.items() if k.startswith(f"{name}."))
        assert written == sum(linear_bytes(out_f, in_f, int(lq.keep_mask.sum()), fmt)), name


def test_a_newer_format_is_refused_with_a_clear_message(tmp_path):
    folder = shutil.copytree(FIXTURE, tmp_path / "future")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"]["format_version"] = FORMAT_VERSION + 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TacqError, match="newer TaCQ Studio"):
        load_variant(folder)


SMOLLM2_135M = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576),
                (576, 1536)] * 30  # fmt: skip


@pytest.mark.parametrize(
    ("bits", "group", "ratio", "bpw"),
    [  # by hand: codes + fp16 scale + b-bit zero per group + (2 + 2) per kept + 2 per row
        (3, 128, 0.001, 3 + (8 * 898_560 * 2.375 + 8 * (4 * 106_168 + 2 * 155_520)) / 106_168_320),
        (2, 128, 0.001, 2 + (8 * 898_560 * 2.25 + 8 * (4 * 106_168 + 2 * 155_520)) / 106_168_320),
        (3, 256, 0.001, 3 + (8 * 518_400 * 2.375 + 8 * (4 * 106_168 + 2 * 155_520)) / 106_168_320),
        (2, None, 0.002, 2 + (8 * 155_520 * 2.25 + 8 * (4 * 212_336 + 2 * 155_520)) / 106_168_320),
    ],
)
def test_honest_bpw_of_smollm2_counts_what_format2_stores(bits, group, ratio, bpw):
    n = sum(o * i for o, i in SMOLLM2_135M)
    k = int(ratio * n)
    kept = [k // len(SMOLLM2_135M)] * len(SMOLLM2_135M)
    kept[0] += k - sum(kept)  # every Linear keeps some: each pays its row counts
    assert size_report(SMOLLM2_135M, kept, bits, 0, group).bpw_honest == pytest.approx(
        bpw, abs=1e-12
    )
