"""The size cap of the grads/quant caches: least recently used files go first, never one
that a live object in this process holds (tacq.cache.pin); listing and clearing for the CLI.

The cap is TACQ_CACHE_GB, else the smaller of 20 GB and a quarter of the free disk, so a
cache that grows with every model and task cannot fill the disk. Another process may still
have a removed file mapped: on Linux its map stays valid and it recomputes next time.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tacq.cache import CAPPED, pinned, tacq_home
from tacq.errors import TacqError

log = logging.getLogger(__name__)

DEFAULT_CAP = 20 * 2**30
GB = 2**30


@dataclass(frozen=True)
class CacheFile:
    path: Path
    size: int
    used: float  # mtime: tacq.cache.load_checked sets it on every load


def cache_cap_bytes() -> int:
    """TACQ_CACHE_GB in bytes (a clear error if not a number), else min(20 GB, free / 4)."""
    value = os.environ.get("TACQ_CACHE_GB")
    if value:
        try:
            gb = float(value)
        except ValueError:
            gb = math.nan
        if not 0 <= gb < math.inf:
            raise TacqError(f"TACQ_CACHE_GB must be a number of GB, 0 or more (got {value!r}).")
        return int(gb * GB)
    folder = tacq_home()
    while not folder.exists() and folder != folder.parent:  # the home may not exist yet
        folder = folder.parent
    return min(DEFAULT_CAP, shutil.disk_usage(folder).free // 4)


def cache_files(which: tuple[str, ...] = CAPPED) -> list[CacheFile]:
    """Every finished cache file in the folders named (a writer's temp file is .part)."""
    out = []
    for name in which:
        try:
            with os.scandir(tacq_home() / name) as entries:
                for e in entries:
                    if e.name.endswith(".safetensors") and e.is_file(follow_symlinks=False):
                        st = e.stat(follow_symlinks=False)
                        out.append(CacheFile(Path(e.path), st.st_size, st.st_mtime))
        except FileNotFoundError:
            continue
    return out


def usage() -> dict[str, tuple[int, int]]:
    """folder -> (files, bytes) for each capped cache folder."""
    files = cache_files()
    return {
        name: (
            sum(f.path.parent.name == name for f in files),
            sum(f.size for f in files if f.path.parent.name == name),
        )
        for name in CAPPED
    }


def _remove(files: list[CacheFile], keep: set[Path]) -> list[CacheFile]:
    """Delete the files not in `keep` (resolved paths); the ones really removed."""
    removed = []
    for f in files:
        if f.path.resolve() in keep:
            continue
        try:
            f.path.unlink()
        except FileNotFoundError:  # another process was first
            continue
        except OSError as e:  # e.g. another user's file in a shared cache
            log.warning("Could not remove cache file %s (%s).", f.path, e)
            continue
        removed.append(f)
    return removed


def enforce_cap(keep: Path | None = None) -> list[Path]:
    """Remove least recently used cache files until the caches fit the cap; never a
    pinned file nor `keep` (the file just written). The paths removed."""
    cap = cache_cap_bytes()
    files = sorted(cache_files(), key=lambda f: f.used)
    total = sum(f.size for f in files)
    if total <= cap:
        return []
    protect = pinned() | ({Path(keep).resolve()} if keep is not None else set())
    removed: list[Path] = []
    for f in files:
        if total <= cap:
            break
        if _remove([f], protect):
            total -= f.size
            removed.append(f.path)
    if removed:
        log.info(
            "Cache over its cap of %s: removed the least recently used %s.",
            human_bytes(cap),
            ", ".join(p.name for p in removed),
        )
    if total > cap:
        log.warning(
            "Caches hold %s, over their cap of %s; the rest is in use and stays.",
            human_bytes(total),
            human_bytes(cap),
        )
    return removed


def clear(which: tuple[str, ...] = CAPPED) -> tuple[int, int, int]:
    """Delete the unpinned cache files in the folders named: (files, bytes freed, kept)."""
    files = cache_files(which)
    removed = _remove(files, pinned())
    return len(removed), sum(f.size for f in removed), len(files) - len(removed)


def human_bytes(n: float) -> str:
    """1363148 -> '1.3 MB' (powers of 1024; whole numbers without a '.0')."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            break
        n /= 1024
    return f"{n:.1f}".removesuffix(".0") + f" {unit}"


def usage_line() -> str:
    """'grads 1.3 GB, quant 0.2 GB (cap 20 GB)'."""
    sizes = ", ".join(f"{k} {human_bytes(b)}" for k, (_, b) in usage().items())
    return f"{sizes} (cap {human_bytes(cache_cap_bytes())})"
