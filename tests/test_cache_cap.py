"""The grads/quant caches: zero-copy reads, a size cap with LRU eviction, pins, the CLI."""

from __future__ import annotations

import gc
import json
import logging
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tacq import cache
from tacq.cache import checksum, load_checked, save_atomic, tacq_home
from tacq.errors import TacqError

ROOT = Path(__file__).resolve().parent.parent


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 5, generator=g)
    return {
        "f32": x,
        "f16": x.half(),
        "bf16": x.bfloat16(),
        "u8": torch.randint(0, 255, (7,), generator=g, dtype=torch.uint8),
        "i32": torch.randint(-9, 9, (3, 2), generator=g, dtype=torch.int32),
        "i64": torch.randint(-9, 9, (4,), generator=g, dtype=torch.int64),
        "bool": torch.rand(5, generator=g) > 0.5,
        "scalar": torch.tensor(2.5),
    }


def _entry(folder: str, name: str, mtime: float | None = None, seed: int = 0) -> Path:
    """A cache file of a fixed size in tacq_home()/folder, last used at `mtime`."""
    path = tacq_home() / folder / f"{name}.safetensors"
    save_atomic(path, {"x": torch.full((512,), float(seed))}, {"key": "k"})
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _cap_files(monkeypatch, n: float, size: int) -> None:
    """Set the cap to n files of `size` bytes."""
    monkeypatch.setenv("TACQ_CACHE_GB", repr(n * size / 2**30))


# ---------------------------------------------------------------- zero-copy reads


def test_load_checked_returns_views_of_a_private_map(tmp_path):
    path = tmp_path / "a.safetensors"
    want = _tensors()
    save_atomic(path, want, {"key": "k"})
    on_disk = path.read_bytes()
    got = load_checked(path, "k")
    assert got is not None and set(got) == set(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
        # a view of one storage that maps the whole file: no second full-size copy
        assert got[name].untyped_storage().nbytes() == len(on_disk), name
    assert len({t.untyped_storage().data_ptr() for t in got.values()}) == 1
    got["f32"].fill_(7.0)  # copy-on-write: the file never changes
    got["u8"].zero_()
    assert path.read_bytes() == on_disk
    again = load_checked(path, "k")
    assert torch.equal(again["f32"], want["f32"]) and torch.equal(again["u8"], want["u8"])


def _raw_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """A safetensors file in the order given (no alignment padding between tensors)."""
    names = {torch.float32: "F32", torch.uint8: "U8", torch.int64: "I64"}
    header, blobs, at = {"__metadata__": meta}, [], 0
    for name, t in tensors.items():
        data = t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape)}
        header[name]["data_offsets"] = [at, at + len(data)]
        blobs.append(data)
        at += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_unaligned_tensor_is_copied_and_still_right(tmp_path):
    path = tmp_path / "odd.safetensors"
    want = {"a": torch.arange(3, dtype=torch.uint8), "b": torch.randn(4), "c": torch.arange(2)}
    _raw_safetensors(path, want, {"key": "k", "crc32": checksum(want)})
    got = load_checked(path, "k")
    assert got is not None
    for name, t in want.items():
        assert torch.equal(got[name], t), name
    assert got["a"].untyped_storage().nbytes() == path.stat().st_size  # aligned: a view
    assert got["b"].untyped_storage().nbytes() == 16  # at byte 3: a copy of its own


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_len])
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "tiny":
        path.write_bytes(data[:5])
    elif how == "header_past_end":
        path.write_bytes(struct.pack("<Q", len(data)) + data[8:])
    elif how == "not_json":
        path.write_bytes(data[:8] + b"{" * header_len + data[8 + header_len :])
    elif how in ("offsets_outside", "unknown_dtype", "shape_mismatch"):
        entry = header["x"]
        if how == "offsets_outside":
            entry["data_offsets"] = [0, 10**9]
        elif how == "unknown_dtype":
            entry["dtype"] = "Q7"
        else:
            entry["shape"] = [3]
        text = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + header_len :])
    elif how == "flipped":
        path.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "tiny",
        "header_past_end",
        "not_json",
        "offsets_outside",
        "unknown_dtype",
        "shape_mismatch",
        "flipped",
        "wrong_key",
    ],
)
def test_damaged_or_foreign_file_is_deleted(tmp_path, how):
    path = tmp_path / "d.safetensors"
    save_atomic(path, {"x": torch.arange(16.0), "y": torch.ones(3)}, {"key": "k"})
    assert load_checked(path, "k") is not None
    _damage(path, how)
    assert load_checked(path, "other" if how == "wrong_key" else "k") is None
    assert not path.exists()


def test_a_load_marks_the_file_as_recently_used(tmp_path):
    path = _entry("grads", "a", mtime=1_000_000)
    assert load_checked(path, "k") is not None
    assert abs(path.stat().st_mtime - time.time()) < 60


# ---------------------------------------------------------------- pins


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_pins_last_while_a_holder_lives():
    class Holder:
        pass

    path = _entry("grads", "p")
    one, two = Holder(), Holder()
    cache.pin(path, one)
    cache.pin(path, two)
    assert path.resolve() in cache.pinned()
    del one
    gc.collect()
    assert path.resolve() in cache.pinned()
    del two
    gc.collect()
    assert path.resolve() not in cache.pinned()


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_a_loaded_file_is_pinned_while_its_tensors_live():
    path = _entry("quant", "l")
    loaded = load_checked(path, "k")
    x = loaded["x"]
    del loaded
    gc.collect()
    assert path.resolve() in cache.pinned()
    del x
    gc.collect()
    assert path.resolve() not in cache.pinned()


# ---------------------------------------------------------------- cap and eviction


def test_eviction_removes_least_recently_used_first(monkeypatch):
    monkeypatch.setenv("TACQ_CACHE_GB", "1")
    # names in creation order; use order (mtime) differs and spans both folders
    a = _entry("grads", "a", mtime=3000)
    b = _entry("quant", "b", mtime=1000)
    c = _entry("grads", "c", mtime=2000)
    part = tacq_home() / "grads" / ".z.safetensors.123.part"  # a writer in progress
    part.write_bytes(b"x" * 5000)
    os.utime(part, (10, 10))
    _cap_files(monkeypatch, 2.5, a.stat().st_size)
    d = _entry("quant", "d")
    assert [p.exists() for p in (a, b, c, d)] == [True, False, False, True]
    assert part.exists()


def test_the_file_just_written_is_kept_even_over_the_cap(monkeypatch, caplog):
    monkeypatch.setenv("TACQ_CACHE_GB", "0.000001")  # 1 KB: less than one file
    a = _entry("grads", "a", mtime=1000)
    assert a.stat().st_size > 1074
    with caplog.at_level(logging.INFO, logger="tacq"):
        b = _entry("grads", "b")
    assert b.exists() and not a.exists()
    assert any("a.safetensors" in r.getMessage() for r in caplog.records)


def test_a_pinned_file_survives_until_its_holder_is_collected(monkeypatch, caplog):
    monkeypatch.setenv("TACQ_CACHE_GB", "1")
    a = _entry("grads", "a", mtime=1000)
    b = _entry("grads", "b", mtime=2000)

    class Study:
        pass

    study = Study()
    cache.pin(a, study)
    _cap_files(monkeypatch, 1.5, a.stat().st_size)
    with caplog.at_level(logging.WARNING, logger="tacq"):
        c = _entry("quant", "c")
    assert [p.exists() for p in (a, b, c)] == [True, False, True]
    assert any("in use" in r.getMessage() for r in caplog.records)
    del study
    gc.collect()
    d = _entry("quant", "d")
    assert [p.exists() for p in (a, c, d)] == [False, False, True]


def test_files_outside_grads_and_quant_are_not_counted(monkeypatch):
    monkeypatch.setenv("TACQ_CACHE_GB", "0.000001")
    other = _entry("workspace", "w", mtime=1000)
    _entry("grads", "g")
    assert other.exists()


def test_bad_cache_setting_gets_a_message(monkeypatch):
    from tacq.cache_admin import cache_cap_bytes

    for bad in ("lots", "-1", "nan", "inf"):
        monkeypatch.setenv("TACQ_CACHE_GB", bad)
        with pytest.raises(TacqError, match=f"TACQ_CACHE_GB must be a number of GB.*{bad}"):
            cache_cap_bytes()
    monkeypatch.setenv("TACQ_CACHE_GB", "1.5")
    assert cache_cap_bytes() == int(1.5 * 2**30)


def test_default_cap_is_the_smaller_of_20_gb_and_a_quarter_of_the_free_disk(monkeypatch):
    import shutil

    from tacq import cache_admin

    monkeypatch.delenv("TACQ_CACHE_GB", raising=False)
    for free, cap in ((8 * 2**30, 2 * 2**30), (2**40, 20 * 2**30)):
        usage = shutil._ntuple_diskusage(2**41, 2**41 - free, free)
        monkeypatch.setattr(cache_admin.shutil, "disk_usage", lambda p, u=usage: u)
        assert cache_admin.cache_cap_bytes() == cap
    assert not tacq_home().exists()  # asking for the cap creates nothing


# ---------------------------------------------------------------- CLI and app


def test_cli_lists_and_clears_the_caches(monkeypatch, capsys):
    from tacq.cli.main import main

    monkeypatch.setenv("TACQ_CACHE_GB", "2")
    g1, g2, q = _entry("grads", "a"), _entry("grads", "b"), _entry("quant", "c")
    size = g1.stat().st_size
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "grads" in out and "2 files" in out and "quant" in out and "1 file" in out
    assert "cap 2 GB" in out
    assert main(["cache", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["grads"] == {"files": 2, "bytes": 2 * size}
    assert listed["quant"] == {"files": 1, "bytes": size}
    assert listed["cap_bytes"] == 2 * 2**30
    assert main(["cache", "--clear", "quant"]) == 0
    assert f"freed {size:,} bytes" in capsys.readouterr().out.replace("1 file", "")
    assert g1.exists() and g2.exists() and not q.exists()
    assert main(["cache", "--clear"]) == 0
    capsys.readouterr()
    assert not g1.exists() and not g2.exists()


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_cli_cache_runs_as_a_module(tmp_path):
    env = {**os.environ, "TACQ_HOME": str(tmp_path / "home"), "TACQ_CACHE_GB": "0.5"}
    cmd = [sys.executable, "-m", "tacq", "cache", "--json"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    listed = json.loads(run.stdout)
    assert listed["grads"] == {"files": 0, "bytes": 0} and listed["cap_bytes"] == 2**29


def test_model_tab_shows_the_caches_size(monkeypatch):
    from app.model_tab import caches_text

    monkeypatch.setenv("TACQ_CACHE_GB", "20")
    assert caches_text() == (
        "Caches: grads 0 B, quant 0 B (cap 20 GB); clear with `python -m tacq cache --clear`"
    )
    path = tacq_home() / "grads" / "big.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"0" * (13 * 2**20 // 10))
    assert caches_text().startswith("Caches: grads 1.3 MB, quant 0 B (cap 20 GB)")
    monkeypatch.setenv("TACQ_CACHE_GB", "many")
    assert "TACQ_CACHE_GB must be a number" in caches_text()
