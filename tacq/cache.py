"""Keyed, atomic, checked safetensors caches (no pickle anywhere)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import safe_open
from torch import Tensor

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the layout of any cache entry changes


def tacq_home() -> Path:
    """Root of everything tacq writes: $TACQ_HOME or ~/.cache/tacq."""
    return Path(os.environ.get("TACQ_HOME") or Path.home() / ".cache" / "tacq")


def cache_key(*parts: Any) -> str:
    """sha256 over a JSON dump of the parts (format version first)."""
    blob = json.dumps([CACHE_FORMAT, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def checksum(tensors: dict[str, Tensor]) -> str:
    """crc32 over every tensor's name, dtype, shape and bytes (sorted by name): catches a
    flipped or zeroed byte that a whole-looking file could hide (~1 GB/s on CPU)."""
    crc = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        crc = zlib.crc32(f"{name}:{t.dtype}:{tuple(t.shape)}".encode(), crc)
        crc = zlib.crc32(t.view(-1).view(torch.uint8).numpy().data, crc)
    return f"{crc:08x}"


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to a temp file in the same folder, then rename: a crash leaves old or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_atomic(path: Path, tensors: dict[str, Tensor], meta: dict[str, str]) -> None:
    """Write to a temp file in the same folder, then rename: a crash leaves old or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        meta = {**meta, "crc32": checksum(tensors)}
        safetensors.torch.save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checked(path: Path, key: str) -> dict[str, Tensor] | None:
    """Load a cache entry if it exists, is whole and carries `key`; else delete it, None.

    A truncated, altered or foreign file (header, key or checksum wrong) is removed so
    that the caller recomputes it.
    """
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                raise ValueError("key mismatch")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        if meta.get("crc32") != checksum(tensors):
            raise ValueError("checksum mismatch")
    except Exception as e:  # safetensors raises several types for a damaged file
        log.warning("Cache file %s is damaged or stale (%s); recomputing.", path, e)
        path.unlink(missing_ok=True)
        return None
    return tensors


def read_meta(path: Path) -> dict[str, str]:
    """The metadata dict of a safetensors file."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
