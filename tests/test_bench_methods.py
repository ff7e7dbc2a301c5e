"""bench/quality.py method names: keys of tacq.quant.recipe.Recipe read through it (unknown names
come back whole and are not known)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture()
def quality(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.delitem(sys.modules, "quality", raising=False)
    import quality

    return quality


@pytest.mark.parametrize(
    ("name", "parsed", "known"),
    [
        ("tacq", ("tacq", None, None), True),
        ("gptq_g128", ("gptq", 128, None), True),
        ("tacq_p0.25", ("tacq", None, 0.0025), True),
        ("tacq_g128_p0.1", ("tacq", 128, 0.001), True),
        ("gptq_p0.2", ("gptq_p0.2", None, None), False),  # plain quantizers keep nothing
        ("tacq_g99", ("tacq_g99", None, None), False),
        ("tacq_p", ("tacq_p", None, None), False),
        ("tacq_p100", ("tacq_p100", None, None), False),
        ("tacq_d0.1", ("tacq", None, None), True),
        ("tacq_p0.2_d0.1", ("tacq", None, 0.002), True),
        ("gptq_g128_d0.1", ("gptq", 128, None), True),
        ("rtn_d0.1", ("rtn_d0.1", None, None), False),  # RTN has no Hessian to damp
        ("fp_d0.1", ("fp_d0.1", None, None), False),
        ("tacq_d20", ("tacq_d20", None, None), False),
        ("tacq_p0.2_d0.1_r200", ("tacq", None, 0.002), True),
        ("gptq_g128_r50", ("gptq", 128, None), True),
        ("rtn_r50", ("rtn_r50", None, None), False),  # tuned rounding works on GPTQ's result
        ("tacq_r0", ("tacq_r0", None, None), False),
        ("tacq_p0.2_d0.1_r100c", ("tacq", None, 0.002), True),
        ("rtn_r50c", ("rtn_r50c", None, None), False),
        ("tacq_rc", ("tacq_rc", None, None), False),
        ("tacq_g128_d0.1_rot", ("tacq", 128, None), True),
        ("gptq_d0.1_rot", ("gptq", None, None), True),
        ("rtn_rot", ("rtn_rot", None, None), False),  # the rotation is GPTQ's
        ("fp_rot", ("fp_rot", None, None), False),
        ("tacq_g64_d0.1_r100c_roth", ("tacq", 64, None), True),  # tuned on the rotated grid
        ("rtn_r100_roth", ("rtn_r100_roth", None, None), False),
        ("tacq_rot_d0.1", ("tacq_rot_d0.1", None, None), False),  # the suffix comes last
        ("tacq_g64_d0.1_e2_roth", ("tacq", 64, None), True),  # distilled scales, rotated
        ("tacq_p0.2_d0.1_r100c_e2", ("tacq", None, 0.002), True),
        ("gptq_g128_e2", ("gptq", 128, None), True),
        ("rtn_g128_e2", ("rtn", 128, None), True),  # RTN's grid has scales too
        ("fp_e2", ("fp_e2", None, None), False),
        ("tacq_e0", ("tacq_e0", None, None), False),
        ("tacq_e2_d0.1", ("tacq_e2_d0.1", None, None), False),  # would run undistilled: refused
        ("tacq_e2_r100", ("tacq_e2_r100", None, None), False),
    ],
)
def test_method_names(quality, name, parsed, known):
    got = quality.parse_method(name)
    assert got[:2] == parsed[:2]
    assert got[2] == pytest.approx(parsed[2]) if parsed[2] else got[2] is None
    assert quality.known_method(name) is known


def test_ratio_rows_sort_after_their_default_row(quality):
    names = ["tacq_p0.25", "tacq_g128", "tacq_d0.1", "tacq", "gptq", "tacq_p0.1", "fp"]
    assert sorted(names, key=quality.method_order) == [
        "fp",
        "gptq",
        "tacq",
        "tacq_d0.1",
        "tacq_p0.1",
        "tacq_p0.25",
        "tacq_g128",
    ]


def test_checked_rounding_is_read_through_a_rotation_suffix(quality):
    assert quality.rounding_checked("tacq_g64_d0.1_r100c_roth")
    assert quality.rounding_checked("tacq_d0.1_r100c_rot")
    assert not quality.rounding_checked("tacq_g64_d0.1_r100_roth")
    assert not quality.rounding_checked("tacq_d0.1_roth")


def test_rounding_suffix_is_split_off_before_damping(quality):
    assert quality.split_rounding("tacq_p0.2_d0.1_r200") == ("tacq_p0.2_d0.1", 200)
    assert quality.split_damp("tacq_p0.2_d0.1_r200") == ("tacq_p0.2", 0.1)
    assert quality.split_rounding("rtn_g128") == ("rtn_g128", None)
    assert quality.split_rounding("tacq_p0.2_r100c") == ("tacq_p0.2", 100)
    assert quality.rounding_checked("tacq_p0.2_r100c")
    assert not quality.rounding_checked("tacq_p0.2_r100") and not quality.rounding_checked("tacq_c")
    names = ["tacq_d0.1_r200c", "tacq_d0.1_r200", "tacq_d0.1", "tacq_r200", "tacq"]
    assert sorted(names, key=quality.method_order) == [
        "tacq",
        "tacq_r200",
        "tacq_d0.1",
        "tacq_d0.1_r200",
        "tacq_d0.1_r200c",
    ]


def test_rotated_rows_sort_after_their_twin_and_keep_its_settings(quality):
    assert quality.rotated("tacq_p0.2_d0.1_rot") and not quality.rotated("tacq_p0.2_d0.1")
    assert quality.split_damp("tacq_p0.2_d0.1_rot") == ("tacq_p0.2", 0.1)
    names = ["tacq_d0.1_roth", "tacq_d0.1_rot", "tacq_g128_d0.1", "tacq_d0.1", "tacq_rot", "tacq"]
    assert sorted(names, key=quality.method_order) == [
        "tacq",
        "tacq_rot",
        "tacq_d0.1",
        "tacq_d0.1_rot",
        "tacq_d0.1_roth",
        "tacq_g128_d0.1",
    ]
    assert quality.rotation_kind("tacq_d0.1_roth") == "hadamard"
    assert quality.rotation_kind("tacq_d0.1_rot") == "haar"
    assert quality.unrotated("tacq_p0.2_d0.1_roth") == "tacq_p0.2_d0.1"
    assert quality.split_damp("tacq_p0.2_d0.1_roth") == ("tacq_p0.2", 0.1)
    assert quality.known_method("tacq_p0.2_d0.1_roth") and quality.known_method("gptq_roth")
    assert not quality.known_method("tacq_roth_d0.1") and not quality.known_method("rtn_roth")


def test_distillation_suffix_reads_through_a_rotation(quality):
    assert quality.split_distill("tacq_g64_d0.1_e2_roth") == ("tacq_g64_d0.1", 2)
    assert quality.split_distill("tacq_g64_d0.1_roth") == ("tacq_g64_d0.1", None)
    assert quality.split_rounding("tacq_d0.1_r100c_e2_roth") == ("tacq_d0.1", 100)
    assert quality.rounding_checked("tacq_d0.1_r100c_e2_roth")
    assert not quality.rounding_checked("tacq_d0.1_r100_e2")
    assert quality.split_damp("tacq_g64_d0.1_e2_roth") == ("tacq_g64", 0.1)
    names = ["tacq_d0.1_e2_roth", "tacq_d0.1_e2", "tacq_d0.1_roth", "tacq_d0.1"]
    assert sorted(names, key=quality.method_order) == [
        "tacq_d0.1",
        "tacq_d0.1_roth",
        "tacq_d0.1_e2",
        "tacq_d0.1_e2_roth",
    ]


def test_damping_suffix_is_split_off_last(quality):
    assert quality.split_damp("tacq_p0.2_d0.1") == ("tacq_p0.2", 0.1)
    assert quality.split_damp("tacq_g128") == ("tacq_g128", None)
    assert quality.split_damp("signed_grad") == ("signed_grad", None)


def test_generic_fit_batches_are_full_chunks_of_the_text_past_the_ppl_window(monkeypatch):
    """The one fit-text policy (tacq.data.calibration): the generic text past the tokens
    perplexity reads, joined and cut into full chunks."""
    import tacq.data.calibration as calibration

    class Tok:  # one id per character, so the chunking can be counted
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

        def decode(self, ids):
            return "".join(map(chr, ids))

    window = "w" * calibration.PPL_WINDOW_TOKENS  # what perplexity reads: never fitted
    monkeypatch.setattr(calibration, "generic_text", lambda: window + "abc\n\ndefg")
    assert calibration.generic_fit_texts(Tok()) == ["abc", "defg"]
    batches = calibration.generic_fit_batches(Tok(), length=4)
    # "abc\n\ndefg\n\n" is 11 ids: two full chunks of 4, the short tail dropped
    assert [b.input_ids.tolist() for b in batches] == [
        [[97, 98, 99, 10]],
        [[10, 100, 101, 102]],
    ]
    assert all(b.attention_mask.bool().all() and b.loss_mask.all() for b in batches)


def test_gap_closed_comes_from_the_merged_rows_of_the_same_task_bits_and_seed(quality):
    """A method rerun alone (no GPTQ row of its own run) still gets its gap from the merged
    rows; a seed without its own fp and GPTQ rows gets none, and a stale value is dropped."""

    def row(method, nll, task="a", bits=2, seed=0):
        return {"task": task, "bits": bits, "seed": seed, "method": method, "answer_nll": nll}

    rows = [
        row("fp", 2.0),
        row("gptq", 10.0),
        row("tacq", 4.0),
        row("tacq", 6.0, bits=3),  # no fp/GPTQ rows at 3 bits
        row("tacq", 3.0, seed=1),  # no fp/GPTQ rows for seed 1
        row("fp", 2.0, task="b"),
        row("gptq", 2.0, task="b"),  # GPTQ equal to fp: no gap to close
        row("tacq", 2.5, task="b"),
    ]
    rows[3]["gap_closed"] = 0.9  # stale, from the run that made it
    gaps = [r.get("gap_closed") for r in quality.fill_gap_closed(rows)]
    assert gaps == [None, 0.0, 0.75, None, None, None, None, None]
