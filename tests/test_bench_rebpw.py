"""bench/rebpw.py: committed rows recounted for packed format 2 from their format-1 counts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tacq.formats.sizes import NumberFormat, size_report

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture()
def rebpw(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.delitem(sys.modules, "rebpw", raising=False)
    import rebpw

    return rebpw


def _linear_bytes(rep) -> int:
    return rep.code_bytes + rep.qparam_bytes + rep.kept_bytes


@pytest.mark.parametrize(
    ("bits", "group", "zero_bytes"), [(2, None, None), (3, 128, None), (3, 64, 2), (3, 128, 3 / 8)]
)
def test_recount_turns_a_format1_count_into_what_size_report_counts(rebpw, bits, group, zero_bytes):
    model = rebpw.smollm2()
    kept = [0] * len(model.shapes)
    for j in range(0, len(kept), 3):  # every third Linear keeps some, unevenly
        kept[j] = 1 + 37 * j
    k = sum(kept)
    old = sum(
        rebpw.format1_bytes(o, i, c, bits, group, zero_bytes)
        for (o, i), c in zip(model.shapes, kept)
    )
    fmt = NumberFormat(bits, group, 2, zero_bytes)
    want = _linear_bytes(size_report(model.shapes, kept, bits, 0, group, fmt))
    assert rebpw.recount(model, bits, group, k, old, zero_bytes) == want < old
    with pytest.raises(ValueError, match="layouts"):
        rebpw.recount(model, bits, group, k, old + 2, zero_bytes)  # no layout gives it


def test_smollm2_shapes_are_the_ones_the_committed_rows_were_measured_on(rebpw):
    model = rebpw.smollm2()
    rows = json.loads((BENCH / "results" / "quality.json").read_text())["rows"]
    fp16 = {r["fp16_bytes"] for r in rows if "fp16_bytes" in r}
    assert fp16 == {2 * (model.n + model.other_params)} and model.n == 106_168_320


def _sum_of_outs(model, total: int) -> bool:
    """Whether some Linears' output sizes add up to `total` (each Linear at most once)."""
    from collections import Counter

    reach = {0}
    for o, n in Counter(o for o, _ in model.shapes).items():
        reach = {r + o * c for r in reach for c in range(n + 1) if r + o * c <= total}
    return total in reach


def committed_rows_off_format2(path: Path, model) -> list[str]:
    """Rows of ours in quality.json whose honest bytes are not what format 2 stores: codes,
    fp16 scales and b-bit zeros, 4 bytes per kept weight and 2 per row of each Linear that
    keeps any (which Linears those are is not recorded: some must fit)."""
    off = []
    for r in json.loads(path.read_text())["rows"]:
        if r["method"] == "fp":
            continue
        bits, group = r["bits"], r.get("group_size")
        k = round((r["bpw"] - bits) * model.n / (32 - bits))
        base = _linear_bytes(size_report(model.shapes, [0] * len(model.shapes), bits, 0, group))
        counts = r["bpw_honest"] * model.n / 8 - base - 4 * k  # 2 bytes per row of such Linears
        rows = round(counts / 2)
        fits = abs(counts - 2 * rows) < 1e-4 and (rows > 0) == (k > 0) and _sum_of_outs(model, rows)
        if not fits:
            off.append(f"{r['task']} {bits}-bit {r['method']} seed {r.get('seed', 0)}")
    return off


def test_committed_quality_rows_are_counted_as_format2_stores_them(rebpw):
    assert committed_rows_off_format2(BENCH / "results" / "quality.json", rebpw.smollm2()) == []


def test_recounting_again_changes_nothing(rebpw):
    model = rebpw.smollm2()
    for topic, fix in rebpw.FILES.items():
        d = json.loads((BENCH / "results" / f"{topic}.json").read_text())
        log = rebpw.Log()
        fix(d, model, log)
        assert (log.changed, log.left) == (0, None), topic
