"""bench/findings.py: target lines computed from result rows, checked on made-up rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture()
def findings(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("findings", "quality", "_common"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import findings

    return findings


def _row(task: str, method: str, em: float, held: int = 160, bits: int = 3, bpw: float = 3.2):
    return {
        "task": task,
        "bits": bits,
        "method": method,
        "exact_match": em,
        "heldout_examples": held,
        "bpw_honest": bpw,
        "answer_nll": 1.0,
    }


def test_three_bit_exact_match_counts_each_setting_on_every_task(findings):
    rows = [
        _row("antonyms", "fp", 0.40),
        _row("antonyms", "tacq", 0.30),  # 75 %
        _row("antonyms", "tacq_g128", 0.36, bpw=3.3),  # 90 %
        _row("antonyms", "gptq", 0.40),  # not TaCQ: never counted
        _row("capitals", "fp", 0.50),
        _row("capitals", "tacq", 0.45),  # 90 %
        _row("capitals", "tacq_g128", 0.40, bpw=3.3),  # 80 %
        _row("plurals", "fp", 0.50, held=24),  # small held-out set: left out
        _row("plurals", "tacq", 0.50, held=24),
        _row("dates", "fp", 0.50, bits=2),  # 2-bit: not this target
        _row("dates", "tacq", 0.50, bits=2),
    ]
    peers = [
        _row("antonyms", "autoround+generic_g128", 0.34, bpw=3.16),  # 85 %
        _row("capitals", "autoround+generic_g128", 0.20, bpw=3.16),  # 40 %
        _row("dates", "hqq_g64", 0.50, bits=2),  # 2-bit: not this target
    ]
    res = {"quality": {"rows": rows}, "peers": {"rows": peers}}
    plain, grouped, peer = findings.three_bit_exact_match(res)
    assert "by the peer autoround+generic_g128 (for comparison) (honest BPW 3.160)" in peer
    assert "met on 1 of 2 tasks measured (7 bundled): antonyms 85.0%, capitals 40.0%" in peer
    # no task's best point is picked: each setting is judged on every task
    assert "by TaCQ (honest BPW 3.200)" in plain
    assert "met on 1 of 2 tasks measured (7 bundled): antonyms 75.0%, capitals 90.0%" in plain
    assert "lowest antonyms (0.300 vs fp 0.400)" in plain
    assert "by TaCQ g128 (honest BPW 3.300)" in grouped
    assert "met on 1 of 2 tasks measured (7 bundled): antonyms 90.0%, capitals 80.0%" in grouped
    assert "plurals" not in plain + grouped and "dates" not in plain + grouped


def test_three_bit_exact_match_is_silent_without_large_sets(findings):
    rows = [_row("antonyms", "fp", 0.4, held=24), _row("antonyms", "tacq", 0.4, held=24)]
    assert findings.three_bit_exact_match({"quality": {"rows": rows}}) == []


def test_one_task_time_names_each_step_and_a_failed_one(findings):
    steps = [
        {"command": "python quality.py --tasks x", "rc": 0, "minutes": 40.0},
        {"command": "python peers.py --task x", "rc": 1, "minutes": 12.5},
    ]
    row = {"task": "x", "steps": steps, "minutes": 52.5, "target_minutes": 90.0}
    (line,) = findings.one_task_time({"one_task": {"rows": [row]}})
    assert "(x: every method once" in line and "in 52 min" in line and "target < 90" in line
    assert "quality 40.0 min, peers 12.5 min (exit 1)" in line


def test_levers_line_reports_each_lever_and_the_dev_pick_on_held_out(findings):
    def lever(name, nll, em, held=None):
        row = {
            "lever": name,
            "bpw_honest": 3.2,
            "dev": {"examples": 48, "answer_nll": nll, "exact_match": em},
        }
        return row | ({"heldout": held} if held else {})

    held = {"examples": 160, "answer_nll": 4.5, "exact_match": 0.2}
    run = {
        "task": "antonyms",
        "bits": 3,
        "fp": {
            "dev": {"answer_nll": 3.0, "exact_match": 0.4},
            "heldout": {"answer_nll": 3.4, "exact_match": 0.25},
        },
        "levers": [
            lever("default", 5.0, 0.1),
            lever("act-order", 4.0, 0.2, held),
            {"lever": "kept weights on HQQ g64's rounding", "error": "hqq is not installed"},
            lever("generic text in the Hessians", 4.5, 0.1, held | {"answer_nll": 4.25}),
            lever("kept weights on AutoRound g128's rounding", 6.0, 0.1, held)
            | {
                "peer_alone": {
                    "dev": {"examples": 48, "answer_nll": 5.5, "exact_match": 0.15},
                    "heldout": {"examples": 160, "answer_nll": 4.125, "exact_match": 0.25},
                }
            },
        ],
        "best_on_dev": "act-order",
    }
    tacq = {
        "task": "antonyms",
        "bits": 3,
        "method": "tacq",
        "answer_nll": 4.7,
        "exact_match": 0.16,
        "heldout_examples": 160,
    }
    (line,) = findings.levers({"levers": {"runs": [run]}, "quality": {"rows": [tacq]}})
    assert "default 5.000 (0.100, 3.20 BPW), act-order 4.000 (0.200, 3.20 BPW)" in line
    assert "kept weights on HQQ g64's rounding not run: hqq is not installed, generic" in line
    assert "fixed settings (not used to pick): generic text in the Hessians 4.250 (0.200), " in line
    assert (
        "kept weights on AutoRound g128's rounding 6.000 (0.100, 3.20 BPW; the peer alone in "
        "the same run 5.500 (0.150))" in line
    )
    assert (
        "AutoRound g128's rounding 4.500 (0.200; the peer alone in the same run 4.125 (0.250))."
        in line
    )
    assert "Best on dev: act-order; scored once on held-out: 4.500 (0.200 = 80% of fp's" in line
    assert (
        "against 4.700 (0.160) for the default TaCQ row (-0.200 on held-out where dev said -1.000)"
        in line
    )


def test_peer_breakdown_line_checks_our_reading_then_says_where_it_breaks(findings):
    drift = [0.1, 0.1, 0.3, 0.4, 1.0]
    rtn = {"ppl": 150.0, "answer_nll": 8.0, "layer_drift": [0.2, 0.2, 0.2, 0.2, 0.5]}
    row = {
        "task": "antonyms",
        "peer": "autoround",
        "bits": 3,
        "group_size": 128,
        "iters": 50,
        "fp_ppl": 40.0,
        "peer_ppl": 7.0e5,
        "peer_own_model_ppl": 7.0e5,
        "max_levels": 8,
        "layer_drift": drift,
        "largest_jump_layer": 4,
        "swap_ppl": {"fp model + peer block 4": 42.0, "peer model + fp block 4": 1.1e6},
        "rtn_mode": rtn,
    }
    gen = row | {
        "generic_calibration": True,
        "calibration_tokens": 8000,
        "peer_ppl": 90.0,
        "answer_nll": 5.0,
        "rtn_mode": rtn | {"ppl": 160.0, "answer_nll": 8.5},
    }
    peer = {
        "task": "antonyms",
        "bits": 3,
        "group_size": 128,
        "peer": "autoround",
        "settings": {"iters": 50},
        "used": {"tokens": 640},
        "answer_nll": 31.4,
    }
    (line,) = findings.peer_breakdown(
        {"peer_breakdown": {"rows": [row, gen]}, "peers": {"rows": [peer]}}
    )
    assert "same generic perplexity (7e+05 and 7e+05; fp 40)" in line
    assert "no group holds more than 8 values (its 8-level grid)" in line
    assert "up to layer 1 (relative drift 0.10 vs 0.20)" in line
    assert "0.30 vs 0.20 at layer 2 and 1.00 vs 0.50 at the last" in line
    assert "alone in the fp model it costs little (ppl 42)" in line
    assert "on 640 calibration tokens." in line
    assert "Calibrated on 8000 tokens instead" in line
    assert "generic ppl 90 and answer NLL 5.00 (vs 31.40); its RTN mode 160 and 8.50." in line


LOWER, HIGHER = [1.0 + 0.01 * i for i in range(40)], [2.0 + 0.01 * i for i in range(40)]


def _paired_row(task: str, method: str, nll: list[float]) -> dict:
    """A 2-bit quality row with per-example NLLs, for the paired lines."""
    return {
        "task": task,
        "bits": 2,
        "method": method,
        "answer_nll": sum(nll) / len(nll),
        "nll_each": nll,
        "correct_each": [0] * len(nll),
    }


def test_damping_line_pairs_each_damped_tacq_row_with_its_plain_twin(findings):
    lower, higher = LOWER, HIGHER
    rows = [
        _paired_row("a", "tacq", higher),
        _paired_row("a", "tacq_d0.1", lower),
        _paired_row("b", "tacq", lower),
        _paired_row("b", "tacq_d0.1", higher),
        _paired_row("c", "tacq_p0.2", lower),
        _paired_row("c", "tacq_p0.2_d0.1", lower),
    ]
    lines = findings.damping_summary(rows)
    assert lines == [
        "- TaCQ damp 0.1 vs TaCQ (GPTQ damping 0.1 instead of the paper's 0.01), 2-bit, paired "
        "on held-out: better on 1 of 2 tasks (a -1.00), worse on 1 (b +1.00), undecided on 0 (-).",
        "- TaCQ 0.20 % damp 0.1 vs TaCQ 0.20 % (GPTQ damping 0.1 instead of the paper's 0.01), "
        "2-bit, paired on held-out: better on 0 of 1 tasks (-), worse on 0 (-), undecided on 1 "
        "(c +0.00).",
    ]


def test_rounding_summary_pairs_each_tuned_row_with_its_untuned_point(findings):
    lower, higher = LOWER, HIGHER
    rows = [
        _paired_row("a", "tacq_p0.2_d0.1", higher),
        _paired_row("a", "tacq_p0.2_d0.1_r200", lower),
        _paired_row("a", "tacq_p0.2", lower),  # not the untuned twin of the tuned row: ignored
    ]
    assert findings.rounding_summary(rows) == [
        "- TaCQ 0.20 % damp 0.1 rounding 200 vs TaCQ 0.20 % damp 0.1 (rounding tuned 200 steps "
        "per block after GPTQ), 2-bit, paired on held-out: better on 1 of 1 tasks (a -1.00), "
        "worse on 0 (-), undecided on 0 (-)."
    ]
    # a checked row: against the untuned point, then against the same tuning unchecked
    rows.append(_paired_row("a", "tacq_p0.2_d0.1_r200c", [x - 0.5 for x in lower]))
    assert findings.rounding_summary(rows)[1:] == [
        "- TaCQ 0.20 % damp 0.1 rounding 200 checked vs TaCQ 0.20 % damp 0.1 (rounding tuned "
        "200 steps per block after GPTQ), 2-bit, paired on held-out: better on 1 of 1 tasks "
        "(a -1.50), worse on 0 (-), undecided on 0 (-).",
        "- TaCQ 0.20 % damp 0.1 rounding 200 checked vs TaCQ 0.20 % damp 0.1 rounding 200 "
        "(each block's tuning kept only where the held-aside answer loss did not rise), 2-bit, paired "
        "on held-out: better on 1 of 1 tasks (a -0.50), worse on 0 (-), undecided on 0 (-).",
    ]
    rows.pop()
    # a tuned row is no damping evidence: damping_summary pairs only untuned rows
    assert findings.damping_summary(rows) == [
        "- TaCQ 0.20 % damp 0.1 vs TaCQ 0.20 % (GPTQ damping 0.1 instead of the paper's 0.01), "
        "2-bit, paired on held-out: better on 0 of 1 tasks (-), worse on 1 (a +1.00), "
        "undecided on 0 (-)."
    ]


def test_rounding_and_distill_summaries_read_through_other_suffixes(findings):
    """A rotated checked row pairs with the rotated unchecked one (not with itself), a
    rotated tuned row with the rotated untuned one, a distilled row with its undistilled
    twin; none of them is damping evidence."""
    rows = [
        _paired_row("a", "tacq_g64_d0.1_roth", HIGHER),
        _paired_row("a", "tacq_g64_d0.1_r100_roth", LOWER),
        _paired_row("a", "tacq_g64_d0.1_r100c_roth", LOWER),
        _paired_row("a", "tacq_g64_d0.1_e2_roth", LOWER),
        _paired_row("a", "tacq_g64", HIGHER),
    ]
    out = findings.rounding_summary(rows)
    h = "rotated (Hadamard)"
    assert [line.split(" vs ")[1].split(f" {h} (")[0] for line in out] == [
        "TaCQ g64 damp 0.1",
        "TaCQ g64 damp 0.1",
        "TaCQ g64 damp 0.1 rounding 100",
    ]
    assert [line.split(" vs ")[0] for line in out] == [
        f"- TaCQ g64 damp 0.1 rounding 100 {h}",
        f"- TaCQ g64 damp 0.1 rounding 100 checked {h}",
        f"- TaCQ g64 damp 0.1 rounding 100 checked {h}",
    ]
    assert "better on 1 of 1 tasks (a -1.00)" in out[0] and "undecided on 1 (a +0.00)" in out[2]
    (line,) = findings.distill_summary(rows)
    assert line.startswith(
        "- TaCQ g64 damp 0.1 distilled 2 rotated (Hadamard) vs TaCQ g64 damp 0.1 rotated "
        "(Hadamard) (every scale distilled from the fp model, 2 epochs,"
    )
    assert "better on 1 of 1 tasks (a -1.00)" in line
    assert findings.damping_summary(rows + [_paired_row("a", "tacq_g64_d0.1_e2", LOWER)]) == []
    # grid ends tuned too: against the untuned point, then against the same rounding without
    clip = findings.rounding_summary(rows + [_paired_row("a", "tacq_g64_d0.1_r100c_clip_roth",
                                                        [x - 0.5 for x in LOWER])])  # fmt: skip
    assert set(out) < set(clip) and len(clip) == 5
    assert clip[2].startswith(f"- TaCQ g64 damp 0.1 rounding 100 checked + clip {h} vs TaCQ g64 "
                              f"damp 0.1 {h} (rounding tuned 100 steps")  # fmt: skip
    assert clip[4].startswith(
        f"- TaCQ g64 damp 0.1 rounding 100 checked + clip {h} vs TaCQ g64 damp 0.1 rounding 100 "
        f"checked {h} (each row's grid ends, so its scale and zero, tuned with the rounding)"
    )
    assert "better on 1 of 1 tasks (a -0.50)" in clip[4]


def test_rotation_summary_pairs_each_rotated_row_with_its_twin_only(findings):
    rows = [
        _paired_row("a", "tacq", LOWER),
        _paired_row("a", "tacq_d0.1", HIGHER),
        _paired_row("a", "tacq_d0.1_rot", LOWER),
    ]
    assert findings.rotation_summary(rows) == [
        "- TaCQ damp 0.1 rotated vs TaCQ damp 0.1 (the unkept weights quantized by GPTQ in a "
        "random rotated basis), 2-bit, paired on held-out: better on 1 of 1 tasks (a -1.00), "
        "worse on 0 (-), undecided on 0 (-)."
    ]
    # a rotated row is no damping evidence: only tacq_d0.1 is paired with tacq
    assert len(findings.damping_summary(rows)) == 1
    assert "worse on 1 (a +1.00)" in findings.damping_summary(rows)[0]
    # a structured (Hadamard) rotation: paired with the unrotated twin and the dense Haar one
    rows.append(_paired_row("a", "tacq_d0.1_roth", HIGHER))
    out = findings.rotation_summary(rows)
    assert len(out) == 3
    assert out[1].startswith("- TaCQ damp 0.1 rotated (Hadamard) vs TaCQ damp 0.1 (")
    assert "undecided on 1 (a +0.00)" in out[1]
    assert out[2].startswith("- TaCQ damp 0.1 rotated (Hadamard) vs TaCQ damp 0.1 rotated (")
    assert "worse on 1 (a +1.00)" in out[2]


def test_matched_bits_needs_a_decided_win_at_equal_or_lower_bits(findings):
    def row(task, method, nll, bpw):
        r = _row(task, method, 0.5, held=4, bits=2, bpw=bpw)
        each = [nll + d for d in (0, 0.1, 0, 0.1)]
        return {**r, "seed": 0, "answer_nll": nll, "nll_each": each, "correct_each": [1, 0, 1, 0]}

    quality = [
        row("antonyms", "tacq", 1.0, 2.19),  # beats the peer by 1 on every example
        row("antonyms", "tacq_p0.2", 1.5, 2.15),
        row("capitals", "tacq", 1.0, 2.19),  # better, but more bits than the peer
        row("capitals", "tacq_p0.2", 3.0, 2.15),  # fits, worse
    ]
    peers = [row("antonyms", "autoround_g128", 2.0, 2.152), row("capitals", "hqq_g64", 2.0, 2.16)]
    [line] = findings.matched_bits({"quality": {"rows": quality}, "peers": {"rows": peers}})
    assert "on 1 of 2 tasks measured (antonyms;" in line
    assert "not on capitals: hqq_g64 (TaCQ 0.20 % undecided or worse)" in line
    assert "lowest held-out NLL of those that fit (1 to 1 points)" in line
    assert "no choice per task), the best is TaCQ 0.20 %: 1 of 2 (antonyms)." in line
    # each task won by a different setting: the per-task choice wins both, no one setting does
    quality.append(row("capitals", "tacq_d0.1", 1.0, 2.15))
    [line] = findings.matched_bits({"quality": {"rows": quality}, "peers": {"rows": peers}})
    assert "on 2 of 2 tasks measured (antonyms, capitals;" in line
    assert "no choice per task), the best is TaCQ damp 0.1: 1 of 2 (capitals)." in line


def test_seeds_line_pairs_each_calibration_sample_with_the_peers_same_sample(findings):
    def row(method, seed, nll, em):
        r = _row("antonyms", method, em, held=4, bits=3)
        each = [nll + d for d in (0, 0.1, 0, 0.1)]
        return {**r, "seed": seed, "answer_nll": nll, "nll_each": each, "correct_each": [1] * 4}

    ours, theirs = "tacq_g256_p0.1_d0.1_roth", "autoround+generic_g128"
    quality = [row(ours, 0, 1.0, 0.5), row(ours, 1, 2.0, 0.25), row(ours, 2, 3.0, 0.0)]
    quality.append(row("tacq", 1, 9.0, 0.0))  # no peer run on seed 1: not paired
    peers = {"rows": [row(theirs, 0, 2.0, 0.5)]}
    assert findings.matched_bits_seeds({"quality": {"rows": quality}, "peers": peers}) == []
    peers["seed_rows"] = [row(theirs, 1, 2.0, 0.5), row(theirs, 2, 2.0, 0.5)]
    [line] = findings.matched_bits_seeds({"quality": {"rows": quality}, "peers": peers})
    assert line.startswith("- Over 3 calibration samples (antonyms, 3-bit, mean ± sd): TaCQ g256")
    assert (
        "NLL 2.000 ± 1.000, exact match 0.250 ± 0.250; autoround+generic_g128 NLL 2.000 ± " in line
    )
    assert "seed 0 -1.000 [-1.000, -1.000], seed 1 +0.000 [0.000, 0.000], seed 2 +1.000" in line
    assert line.endswith("TaCQ better on 1, worse on 1, undecided on 1.")


def test_fresh_line_faces_each_peer_point_with_the_setting_fixed_in_advance(findings):
    def row(task, method, nll, bpw, em=0.5, bits=2):
        r = _row(task, method, em, held=4, bits=bits, bpw=bpw)
        each = [nll + d for d in (0, 0.1, 0, 0.1)]
        return {**r, "answer_nll": nll, "nll_each": each, "correct_each": [1, 0, 1, 0]}

    fixed = findings.FRESH_POINTS[2]
    quality = [
        row("addition", "fp", 0.5, 16, em=0.8),
        row("addition", fixed, 1.0, 2.115, em=0.4),  # beats both peers by 1 everywhere
        row("addition", "tacq_d0.1", 0.1, 2.1),  # another setting: never picked
        row("last_word", fixed, 1.0, 2.115),
    ]
    peers = [
        row("addition", "autoround+generic_g128", 2.0, 2.152, em=0.3),
        row("addition", "hqq_g64", 2.0, 2.25),
        row("last_word", "autoround+generic_g128", 1.0, 2.152),  # a tie: undecided
        row("last_word", "hqq_g32", 9.0, 2.0),  # fewer bits than the fixed setting
        {**row("last_word", "hqq_g64", 0.0, 3.2), "seed": 1},  # another sample: not this line
    ]
    res = {"quality": {"rows": [], "fresh_rows": quality}, "peers": {"fresh_rows": peers}}
    [line] = findings.matched_bits_fresh(res)
    assert line.startswith(f"- Never-tuned tasks, 2-bit, one setting fixed before they were run, "
                           f"{findings.label(fixed)} (2.115 honest BPW): it beats every peer "
                           "point")  # fmt: skip
    assert "on 1 of 2 (addition; target 2)." in line
    assert (
        "addition: exact match 0.400 (50% of fp); autoround+generic_g128 -1.000 [-1.000, " in line
    )
    assert "its exact match 0.300; hqq_g64 -1.000" in line
    assert "last_word: exact match 0.500; autoround+generic_g128 +0.000" in line
    assert "hqq_g32 at fewer bits (2.000)" in line and "tacq_d0.1" not in line
    assert findings.matched_bits_fresh({"quality": {"rows": []}, "peers": {"rows": []}}) == []
    # an fp that never gets it right, a bit width with no fixed setting, another held-out set
    quality[0]["exact_match"] = 0.0
    peers += [row("addition", "hqq_g64", 2.0, 4.2, bits=4), {**peers[1], "nll_each": [1.0]}]
    [line] = findings.matched_bits_fresh(res)
    assert "addition: exact match 0.400; " in line and "on another held-out set" in line
    # a decided loss says whether it is the typical example or a few blown up
    peers.append(row("addition", "autoround_g64", 0.0, 2.3))
    [line] = findings.matched_bits_fresh(res)
    assert ("autoround_g64 +1.000 [1.000, 1.000], its exact match 0.500 (per example: median "
            "+1.000, TaCQ worse on 100%; its 10 worst examples carry 100% of the summed") in line  # fmt: skip


def test_exact_match_ceiling_names_the_most_kept_where_no_setting_meets_85(findings):
    rows = [
        _row("antonyms", "fp", 0.40),
        _row("antonyms", "tacq", 0.20),  # 50 %
        _row("antonyms", "tacq_g128_d0.1", 0.28, bpw=3.36),  # 70 %
        _row("antonyms", "gptq", 0.39),  # not TaCQ: never counted
        _row("antonyms", "tacq", 0.38, bits=4, bpw=4.2),  # 95 % at 4 bits
        _row("antonyms", "tacq_d0.1", 0.30, bits=4, bpw=4.19),  # 75 %: not the target
        _row("capitals", "fp", 0.50),
        _row("capitals", "tacq", 0.45),  # 90 %: met, so no line
        _row("dates", "fp", 0.50, held=24),  # small held-out set: left out
        _row("dates", "tacq", 0.10, held=24),
    ]
    lever = {
        "lever": "group size 32 + damping 10 %",
        "bpw_honest": 3.91,
        "heldout": {"examples": 160, "answer_nll": 4.0, "exact_match": 0.30},  # 75 %
    }
    small = lever | {"lever": "kept 2 %", "heldout": {"examples": 24, "exact_match": 0.40}}
    runs = [{"task": "antonyms", "bits": 3, "levers": [lever, small, {"lever": "x"}]}]
    peers = [
        _row("antonyms", "autoround+generic_g128", 0.32, bpw=3.16),  # 80 %
        _row("antonyms", "hqq_g64", 0.02, bpw=3.5),
        _row("antonyms", "hqq_g64", 0.39, bits=2),  # 2-bit: not this target
    ]
    res = {"quality": {"rows": rows}, "levers": {"runs": runs}, "peers": {"rows": peers}}
    (line,) = findings.exact_match_ceiling(res)
    assert line.startswith("- 3-bit exact match on antonyms: no TaCQ setting keeps 85% of fp")
    assert (
        "the most any of the 3 settings scored on held-out kept is 75.0% (lever group size 32 "
        "+ damping 10 %, 3.910 BPW)" in line
    )
    assert "the most a peer kept is 80.0% (autoround+generic_g128, 3.160 BPW)" in line
    assert line.endswith("; at 4 bits TaCQ keeps 95.0% (4.200 BPW).")
    runs[0]["best_on_dev"] = "group size 32 + damping 10 %"
    (line,) = findings.exact_match_ceiling(res)
    assert (
        "; the setting the dev split picks (lever group size 32 + damping 10 %, 3.910 BPW) "
        "keeps 75.0%; the most a peer" in line
    )
    res["quality"]["rows"].append(_row("antonyms", "tacq_p0.5", 0.36))  # 90 %: met at 3 bits
    (line,) = findings.exact_match_ceiling(res)  # met, but not by what dev picked
    assert line == (
        "- 3-bit exact match on antonyms: 1 of the 4 TaCQ settings scored on held-out keep 85% "
        "or more of fp's (0.400): TaCQ 0.50 % 90.0% (3.200 BPW); the setting the dev split "
        "picks (lever group size 32 + damping 10 %, 3.910 BPW) keeps 75.0%."
    )
    del runs[0]["best_on_dev"]  # no dev pick: nothing to add where the target is met
    assert findings.exact_match_ceiling(res) == []


def _dev_row(task, method, nll, bpw, dev, bits):
    """A matched-bits row on 4 held-out examples, with dev scores when dev is given."""
    r = _row(task, method, 0.5, held=4, bits=bits, bpw=bpw)
    each = [nll + d for d in (0, 0.1, 0, 0.1)]
    r |= {"seed": 0, "answer_nll": nll, "nll_each": each, "correct_each": [1, 0, 1, 0]}
    return r | ({"dev": {"examples": 48, "answer_nll": dev, "exact_match": 0.3}} if dev else {})


def test_matched_bits_picks_each_point_on_dev_where_rows_were_scored_there(findings):
    def row(task, method, nll, bpw, dev=None):
        return _dev_row(task, method, nll, bpw, dev, bits=2)

    quality = [
        row("antonyms", "tacq_p0.2", 1.0, 2.15, dev=3.0),  # best on held-out, worse on dev
        row("antonyms", "tacq_p0.2_d0.1", 2.5, 2.15, dev=2.0),  # dev pick: loses
        row("capitals", "tacq_p0.2", 1.0, 2.15, dev=2.0),  # both picks win
        row("capitals", "tacq_p0.2_d0.1", 1.2, 2.15),  # never scored on dev: not a dev choice
    ]
    peers = [row("antonyms", "hqq_g64", 2.0, 2.16), row("capitals", "hqq_g64", 2.0, 2.16)]
    [line] = findings.matched_bits({"quality": {"rows": quality}, "peers": {"rows": peers}})
    assert (
        "the TaCQ point picked on the dev split (the lowest dev NLL of the points that fit and "
        "were scored on dev), on 1 of 2 tasks measured (capitals; target 80 % of the 7 bundled "
        "tasks); not on antonyms: hqq_g64 (TaCQ 0.20 % damp 0.1 undecided or worse)." in line
    )
    assert (
        "Picked by the held-out NLL instead, the best of 2 to 2 points that fit (a look at the "
        "test, so optimistic): 2 of 2 tasks measured (antonyms, capitals)." in line
    )


def test_matched_bits_picks_on_dev_only_where_every_peer_point_can_be_faced(findings):
    def row(task, method, nll, bpw, dev=None):
        return _dev_row(task, method, nll, bpw, dev, bits=3)

    quality = [
        row("antonyms", "tacq_p0.2", 1.0, 3.146),  # fits both peer points, not scored on dev
        row("antonyms", "tacq_d0.1_r100", 3.0, 3.194, dev=1.0),  # on dev, fits HQQ only
    ]
    peers = [row("antonyms", "autoround_g128", 2.0, 3.161), row("antonyms", "hqq_g64", 2.0, 3.5)]
    [line] = findings.matched_bits({"quality": {"rows": quality}, "peers": {"rows": peers}})
    # no dev pick can face AutoRound: the line stays on the held-out pick and says why
    assert ", on 1 of 1 tasks measured (antonyms; target 80 % of the 7 bundled tasks)." in line
    assert "picked on the dev split" not in line
    assert (
        "(A pick on the dev split needs a point scored on dev that fits each peer point; 1 of 2 "
        "have one.)" in line
    )


def test_packed_memory_line_adds_the_rotated_cost_only_when_measured(findings):
    def mem(mb):
        return {"resident_mb": mb, "share_of_fp16_linears": mb / 200, "rss_change_mb": mb}

    def speed(tps):
        return {"tokens_per_s": tps, "vs_dense": tps / 16, "compile_s": 20.0}

    pk = {
        "memory": {"2-bit": mem(28.0), "3-bit": mem(40.0), "dense 2-bit copy (before)": mem(513)},
        "speed": {"packed 2-bit, compiled": speed(12.0), "packed 2-bit, eager": speed(6.0),
                  "packed 3-bit, compiled": speed(12.0)},
    }  # fmt: skip
    (line,) = findings.packed_memory({"packed": pk})
    assert "Rotated" not in line and "3-bit: 40.0 MB" in line
    pk["memory"]["3-bit rotated"] = mem(41.5)
    pk["speed"]["packed 3-bit rotated, compiled"] = speed(9.0)
    (line,) = findings.packed_memory({"packed": pk})
    assert line.endswith(
        " Rotated (Hadamard) 3-bit: 41.5 MB against 40.0, 9.0 tokens/s compiled, 0.75x the "
        "unrotated 3-bit's."
    )


def test_block_sensitivity_reports_shares_and_their_agreement(findings):
    up = [1.4, 2.0, 1.9, 1.7]  # NLL with only this block at 4 bits (all 3-bit: 2.0)
    down = [1.5, 1.1, 1.2, 1.3]  # NLL with only this block at 3 bits (all 4-bit: 1.0)
    run = {
        "task": "capitals",
        "bits": 3,
        "examples": 63,
        "variant": "v",
        "all_low": {"answer_nll": 2.0},
        "all_high": {"answer_nll": 1.0},
        "blocks": [
            {
                "block": i,
                "only_this_high": {"answer_nll": u},
                "only_this_low": {"answer_nll": d},
                "tacq_3bit": t,
            }
            for i, (u, d, t) in enumerate(zip(up, down, [4.0, 1.0, 2.0, 3.0]))
        ],
    }
    (line,) = findings.block_sensitivity({"block_sensitivity": {"runs": [run]}})
    assert "all blocks at 3 bits answer NLL 2.000, all at 4 bits 1.000" in line
    assert "closes at most 60% of that gap (blocks 0, 3, 2: 60%, 30%, 10%" in line
    assert "an even share would be 25%); the 4 single upgrades add up to 100%" in line
    assert "correlate at 1.00" in line and "predicts its share at 0.98" in line
    run["blocks"][0]["tacq_3bit"] = 0.0  # the biggest share, the smallest score
    (line,) = findings.block_sensitivity({"block_sensitivity": {"runs": [run]}})
    assert "predicts its share at -0.39" in line


def _on_dev(task: str, method: str, dev: float, bits: int = 3, bpw: float = 3.2) -> dict:
    return {**_row(task, method, 0.3, bits=bits, bpw=bpw), "dev": {"answer_nll": dev}}


def test_preset_pick_ranks_per_row_settings_on_dev_over_every_task(findings, monkeypatch):
    monkeypatch.setattr(findings, "list_tasks", lambda: ["a", "b"])
    rows = [
        _on_dev("a", "tacq_d0.1", 1.0),  # ranks 1 and 3: mean 2
        _on_dev("b", "tacq_d0.1", 3.0),
        _on_dev("a", "tacq_d0.1_roth", 2.0),  # ranks 2 and 1: mean 1.5, picked
        _on_dev("b", "tacq_d0.1_roth", 1.0),
        _on_dev("a", "tacq", 3.0),  # ranks 3 and 2: mean 2.5
        _on_dev("b", "tacq", 2.0),
        _on_dev("a", "tacq_g64_d0.1", 0.1, bpw=3.5),  # group-wise: not a per-row preset
        _on_dev("b", "tacq_g64_d0.1", 0.1, bpw=3.5),
        _on_dev("a", "tacq_d0.1_rot", 0.1),  # the dense rotation: not on the screen
        _on_dev("b", "tacq_d0.1_rot", 0.1),
        _on_dev("a", "msg", 0.1),  # another metric
        _on_dev("b", "msg", 0.1),
        _on_dev("a", "tacq_p0.2", 0.1),  # not scored on every task
        _row("b", "tacq_p0.2", 0.3),  # no dev scores
        _on_dev("a", "tacq_p0.5", 0.1, bits=2),  # another bit width
        _on_dev("b", "tacq_p0.5", 0.1, bits=2),
    ]
    method, rank = findings.preset_pick(rows, 3)
    assert method == "tacq_d0.1_roth"
    assert rank == {"tacq_d0.1": 2.0, "tacq_d0.1_roth": 1.5, "tacq": 2.5}
    assert findings.preset_pick(rows, 4) is None


def test_the_apps_measured_presets_follow_the_rule_on_the_committed_results(findings):
    """tacq.quant.recipe.MEASURED is what preset_pick chooses from bench/results/quality.json:
    a new measurement that changes the winner fails here until the preset follows it."""
    import json

    from tacq.quant.recipe import Recipe

    rows = json.loads((BENCH / "results" / "quality.json").read_text())["rows"]
    for bits in (2, 3):
        method, _ = findings.preset_pick(rows, bits)
        assert findings.preset_of(method).changed(bits=bits) == Recipe.preset("measured", bits)


def test_a_miss_is_the_right_answer_going_on_only_where_its_line_starts_with_it(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.delitem(sys.modules, "em_misses", raising=False)
    from em_misses import miss_kinds

    def row(prediction, correct=False):
        return {"answer": " 40", "prediction": prediction, "correct": correct}

    rows = [row("40", True), row("40, 43, 46"), row("40. 43"), row("40.5"), row("400"),
            row("39"), row(""), row("40")]  # fmt: skip
    assert miss_kinds(rows) == {"right": 1, "answer_then_more": 2, "other_answer": 5}
