"""Recount the honest size of committed rows for packed format 2, without rerunning them.

Format 2 of packed checkpoints (tacq.formats.export) stores each zero at b bits instead of a uint8
and each output row's kept count as a uint16 instead of int32 CSR row pointers. Zeros are
integers in [0, 2^b), so nothing about a variant changes but its size: a row's quality
stands and only its honest count moves. Rows of ours (TaCQ, GPTQ, RTN and the other
saliency metrics) made before format 2 are recounted from their recorded settings (bits,
group size, kept ratio or the paper BPW) and SmolLM2-135M's shapes (tacq.shapes.Shapes) by
tacq.formats.sizes.size_report, the function every new row is counted with.

The per-Linear kept counts are not recorded, and format 2 charges each Linear that keeps
any weight a count per row; which Linears those are follows from the format-1 count (4
bytes per kept weight, plus 4 (out + 1) per Linear that keeps any). Each row's format-1
count is rebuilt from such a layout first and must equal the committed value exactly; a
row where none does, or where two layouts differ in format 2, is left and reported.

Peers' own rows (peers.json: AutoRound, HQQ) are counted by their own formats and left
as they are; a lever that keeps TaCQ's weights on a peer's rounding keeps the peer's
scales and zeros and has its kept weights' CSR recounted (peer_bpw_honest stays). Measured
file sizes (quality.json's packed_bytes: what format 1 wrote) stay too. A recounted row is
marked "bpw_format": 2; rows made after FORMAT1_LAST were counted in format 2 already.

    python bench/rebpw.py             # rewrite bench/results, then: python bench/tables.py --write
    python bench/rebpw.py --dry-run   # say what would change
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from _common import ROOT
from scale import SHAPES

from tacq.formats.sizes import NumberFormat, size_report
from tacq.shapes import Shapes

FORMAT1_LAST = "7c18058"  # the last commit whose packed exports and size reports were format 1
FORMAT1_LAST_DATE = "2026-12-07"  # its date: a row made before it by a commit git no longer has
MARK = "bpw_format"  # set to 2 on a recounted row
RESULTS = ROOT / "bench" / "results"

# bytes per zero of the peers' own formats (tacq.peers.registry: HQQ fp16, AutoRound packed)
PEER_ZERO_BYTES: dict[str, Callable[[int], float]] = {
    "hqq": lambda bits: 2,
    "auto-round": lambda bits: bits / 8,
}


@dataclass(frozen=True)
class Counted:
    """A model as the size report sees it: its Linears' shapes in model order."""

    shapes: list[tuple[int, int]]
    other_params: int  # everything not quantized, stored in fp16

    @property
    def n(self) -> int:
        return sum(o * i for o, i in self.shapes)

    @property
    def other_bytes(self) -> int:
        return 2 * self.other_params


def smollm2() -> Counted:
    s = Shapes.from_config(SHAPES["smollm2-135m"])  # every committed row is of this model
    shapes = [(o, i) for _ in range(s.layers) for _, o, i in s.linears()]
    return Counted(shapes, s.params - s.quantizable)


def format1_bytes(
    out_f: int, in_f: int, kept: int, bits: int, group: int | None, zero_bytes: float | None
) -> int:
    """One Linear's bytes as format 1 stored (and tacq.circuit.select counted) them: uint8 zeros of
    ours (zero_bytes None; a peer's own otherwise), int32 row pointers, out + 1."""
    groups = 1 if group is None else -(-in_f // group)
    zero = 1 if zero_bytes is None else zero_bytes
    qparam = math.ceil(out_f * groups * (2 + zero))
    kept_bytes = kept * (2 + (2 if in_f <= 2**15 else 4)) + (out_f + 1) * 4 if kept else 0
    return math.ceil(out_f * in_f * bits / 8) + qparam + kept_bytes


def layouts(shapes: list[tuple[int, int]], k: int, pointers: int) -> list[list[int]]:
    """Per-Linear kept counts summing to k whose Linears keeping any weight have
    sum(out + 1) == pointers: one per way of choosing how many Linears of each output
    size keep some (which ones does not change a count)."""
    by_out: dict[int, list[int]] = {}
    for j, (o, _) in enumerate(shapes):
        by_out.setdefault(o, []).append(j)
    outs = sorted(by_out)

    def choices(i: int, left: int) -> Iterator[list[int]]:
        o = outs[i]
        for n in range(min(len(by_out[o]), left // (o + 1)) + 1):
            rest = left - n * (o + 1)
            if i == len(outs) - 1:
                if rest == 0:
                    yield [n]
            else:
                yield from ([n, *c] for c in choices(i + 1, rest))

    out = []
    for ns in choices(0, pointers):
        if not 0 < sum(ns) <= k:
            continue
        kept = [0] * len(shapes)
        for o, n in zip(outs, ns):
            for j in by_out[o][:n]:
                kept[j] = 1
        kept[kept.index(1)] += k - sum(ns)
        out.append(kept)
    return out


def recount(model: Counted, bits: int, group: int | None, k: int, old: int, zero_bytes=None) -> int:
    """Format-2 bytes of a row's quantized Linears, from its format-1 count `old` (bytes)
    and k kept weights. ValueError when no layout gives `old` or layouts disagree."""
    if any(i > 2**15 for _, i in model.shapes):
        raise ValueError("a Linear with int32 column indices: kept bytes are not 4 each")
    base = sum(format1_bytes(o, i, 0, bits, group, zero_bytes) for o, i in model.shapes)
    pointers, rest = divmod(old - base - 4 * k, 4)
    if k == 0:
        found = [[0] * len(model.shapes)] if old == base else []
    else:
        found = [] if rest or pointers < 0 else layouts(model.shapes, k, pointers)
    new = set()
    for kept in found:
        again = zip(model.shapes, kept)
        assert sum(format1_bytes(o, i, c, bits, group, zero_bytes) for (o, i), c in again) == old
        fmt = NumberFormat(bits, group, 2, zero_bytes)
        rep = size_report(model.shapes, kept, bits, 0, group, fmt)
        new.add(rep.code_bytes + rep.qparam_bytes + rep.kept_bytes)
    if len(new) != 1:
        raise ValueError(f"{len(found)} layouts give the format-1 count, {len(new)} counts")
    return new.pop()


def whole(x: float, what: str) -> int:
    if abs(x - round(x)) > 1e-4:
        raise ValueError(f"{what} {x} is not a whole number of bytes")
    return round(x)


def bpw_bytes(bpw: float, model: Counted) -> int:
    return whole(bpw * model.n / 8, "bpw_honest")


def new_bpw(nbytes: int, model: Counted) -> float:
    return 8 * nbytes / model.n  # as SizeReport.bpw_honest


# ---------------------------------------------------------------- the result files


def made_in_format1(commit: str | None, date: str | None) -> bool | None:
    """Whether a row stamped with `commit` on `date` was made by format-1 code: git says
    for a commit it has; one it lacks (history rewritten since) was format 1 if dated
    before FORMAT1_LAST; None when that cannot tell."""
    if commit and commit != "?":
        git = ["git", "merge-base", "--is-ancestor", commit, FORMAT1_LAST]
        try:
            rc = subprocess.run(git, cwd=ROOT, capture_output=True).returncode
        except OSError:  # no git here: the date decides
            rc = 128
        if rc in (0, 1):  # 128: a commit git does not have
            return rc == 0
    if date and date < FORMAT1_LAST_DATE:
        return True
    return None


@dataclass
class Log:
    changed: int = 0
    left: list[str] | None = None

    def leave(self, what: str, why: str) -> None:
        self.left = (self.left or []) + [f"{what}: {why}"]


def _due(row: dict, env: dict, log: Log, what: str) -> bool:
    """Whether `row` still holds a format-1 count (its own stamp, else the file's)."""
    if row.get(MARK) == 2:
        return False
    run = row.get("run") or env
    made = made_in_format1(run.get("commit"), run.get("date"))
    if made is None:
        log.leave(what, f"cannot tell which format commit {run.get('commit')} counted in")
    return bool(made)


def _set_bpw(row: dict, model: Counted, bits, group, k, zero_bytes, log: Log, what: str) -> None:
    """Rewrite row["bpw_honest"] (and a size_report_bytes beside it) for format 2."""
    try:
        old = bpw_bytes(row["bpw_honest"], model)
        new = recount(model, bits, group, k, old, zero_bytes)
    except ValueError as e:
        log.leave(what, str(e))
        return
    if "size_report_bytes" in row:
        if row["size_report_bytes"] != old + model.other_bytes:
            log.leave(what, "size_report_bytes disagrees with bpw_honest")
            return
        row["size_report_bytes"] = new + model.other_bytes
    row["bpw_honest"] = new_bpw(new, model)
    row[MARK] = 2
    log.changed += 1


def _set_mb(row: dict, key: str, model: Counted, bits, group, k, log: Log, what: str) -> None:
    """Rewrite a size report's total in MB (all tensors: quantized Linears + the rest)."""
    try:
        old = whole(row[key] * 2**20, key) - model.other_bytes
        new = recount(model, bits, group, k, old)
    except ValueError as e:
        log.leave(what, str(e))
        return
    row[key] = (new + model.other_bytes) / 2**20
    row[MARK] = 2
    log.changed += 1


def quality(d: dict, model: Counted, log: Log) -> None:
    """Rows of ours by method name; kept count from the paper BPW each recorded."""
    for r in d["rows"]:
        what = f"quality {r['task']} {r['bits']}-bit {r['method']} seed {r.get('seed', 0)}"
        if r["method"] == "fp" or "bpw_honest" not in r or not _due(r, d["environment"], log, what):
            continue
        bits = r["bits"]
        k = round((r["bpw"] - bits) * model.n / (32 - bits))
        _set_bpw(r, model, bits, r.get("group_size"), k, None, log, what)


def levers(d: dict, model: Counted, log: Log) -> None:
    """Each lever's settings from bench/levers.py; a peer's zeros in its own format."""
    from levers import LEVERS

    for run in d["runs"]:
        bits = run["bits"]
        for r in run["levers"]:
            what = f"levers {run['task']} {bits}-bit {r['lever']!r}"
            if not _due(r, run.get("run") or d["environment"], log, what):
                continue
            lever = LEVERS.get(r["lever"])
            if lever is None:
                log.leave(what, "no such lever in bench/levers.py")
                continue
            zero = None
            if r.get("peer"):
                zero = PEER_ZERO_BYTES[r["peer"].split()[0]](bits)
            k = int(lever.ratio * model.n)
            _set_bpw(r, model, bits, lever.group_size, k, zero, log, what)


def demo_pick(d: dict, model: Counted, log: Log) -> None:
    """TaCQ 2-bit per channel at each row's ratio (bench/demo_pick.py); the pick's too."""
    pick = d.get("pick") or {}
    for r in [*d["rows"], pick, *(pick.get("modes") or {}).values()]:
        what = f"demo_pick {r.get('task')} {r.get('examples', 'pick')} {r.get('ratio')}"
        if "bpw_honest" in r and _due(r, d["environment"], log, what):
            _set_bpw(r, model, 2, None, int(r["ratio"] * model.n), None, log, what)


def ablations(d: dict, model: Counted, log: Log) -> None:
    """The ratio sweep's size_mb: TaCQ per channel (bench/ablations.py)."""
    for r in d.get("sweep") or []:
        what = f"ablations sweep {r['task']} {r['bits']}-bit {r['ratio']}"
        if "size_mb" in r and _due(r, d["environment"], log, what):
            k = int(r["ratio"] * model.n)
            _set_mb(r, "size_mb", model, r["bits"], None, k, log, what)


VARIANT = re.compile(r"^tacq-(\d)bit(?:-g(\d+))?.*-(\d+\.\d+)%$")


def packed(d: dict, model: Counted, log: Log) -> None:
    """packed_file_mb of each variant (its size report), read from the variant's name."""
    for key, r in (d.get("memory") or {}).items():
        what = f"packed {key}"
        if "packed_file_mb" not in r or not _due(r, d["environment"], log, what):
            continue
        m = VARIANT.match(r.get("variant", ""))
        if m is None:
            log.leave(what, f"cannot read settings from {r.get('variant')!r}")
            continue
        bits, group, pct = int(m[1]), m[2] and int(m[2]), float(m[3])
        k = int(pct / 100 * model.n)
        _set_mb(r, "packed_file_mb", model, bits, group, k, log, what)


FILES = {
    "quality": quality,
    "levers": levers,
    "demo_pick": demo_pick,
    "ablations": ablations,
    "packed": packed,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="say what would change, write nothing")
    args = p.parse_args()
    model = smollm2()
    for topic, fix in FILES.items():
        path = RESULTS / f"{topic}.json"
        text = path.read_text()
        d = json.loads(text)
        log = Log()
        fix(d, model, log)
        print(f"{topic}: {log.changed} recounted, {len(log.left or [])} left")
        for line in log.left or []:
            print(f"  left {line}")
        out = json.dumps(d, indent=2)
        if out != text and not args.dry_run:
            path.write_text(out)


if __name__ == "__main__":
    main()
