"""Keyed, atomic, checked safetensors caches (no pickle anywhere)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import weakref
import zlib
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import safe_open
from torch import Tensor

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the layout of any cache entry changes
CAPPED = ("grads", "quant")  # the cache folders under tacq_home() that the size cap covers
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
MAX_HEADER = 100 * 2**20  # as safetensors: a larger header is a damaged file


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
    if path.parent.name in CAPPED and path.parent.parent.resolve() == tacq_home().resolve():
        from tacq.cache_admin import enforce_cap

        enforce_cap(keep=path)


def load_checked(path: Path, key: str) -> dict[str, Tensor] | None:
    """Load a cache entry if it exists, is whole and carries `key`; else delete it, None.

    The tensors are views of a private (copy-on-write) memory map of the file: no second
    full-size copy, and writing to them never changes the file. The file stays pinned
    (tacq.cache_admin never evicts it) while any of them lives, and its mtime is set to
    now: mtime is the last use. A truncated, altered or foreign file (header, key or
    checksum wrong) is removed so that the caller recomputes it.
    """
    if not path.exists():
        return None
    try:
        size = path.stat().st_size
        header, start = _header(path, size)
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or meta.get("key") != key:
            raise ValueError("key mismatch")
        storage = _map(path, size)
        tensors = {name: _view(storage, start, name, info) for name, info in header.items()}
        if meta.get("crc32") != checksum(tensors):
            raise ValueError("checksum mismatch")
    except Exception as e:  # any damage: recompute
        log.warning("Cache file %s is damaged or stale (%s); recomputing.", path, e)
        path.unlink(missing_ok=True)
        return None
    pin(path, storage)
    try:
        os.utime(path)
    except OSError:  # a cache this user may read but not touch: LRU order only suffers
        pass
    return tensors


def _header(path: Path, size: int) -> tuple[dict, int]:
    """A safetensors file's JSON header and the byte where its data starts."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or n > min(size - 8, MAX_HEADER):
            raise ValueError(f"header of {n} bytes in a file of {size}")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header, 8 + n


def _map(path: Path, size: int) -> torch.UntypedStorage:
    """The whole file as one CPU storage: a MAP_PRIVATE map (pages are read on use and
    shared with the page cache; a write copies the page, never reaching the file)."""
    try:
        return torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    except RuntimeError:  # a file system without mmap: one copy in memory
        return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8).untyped_storage()


def _view(storage: torch.UntypedStorage, start: int, name: str, info: dict) -> Tensor:
    """One tensor of the header as a view of `storage` (a copy when its bytes are not
    aligned for its dtype)."""
    dtype = DTYPES[info["dtype"]]
    shape = [int(d) for d in info["shape"]]
    begin, end = (start + int(o) for o in info["data_offsets"])
    size = dtype.itemsize
    if min(shape, default=0) < 0 or not start <= begin <= end <= storage.nbytes():
        raise ValueError(f"tensor {name} lies outside the file")
    if end - begin != math.prod(shape) * size:
        raise ValueError(f"tensor {name} has {end - begin} bytes for shape {shape}")
    if begin % size == 0:
        return torch.empty(0, dtype=dtype).set_(storage, begin // size, shape)
    raw = torch.empty(0, dtype=torch.uint8).set_(storage, begin, (end - begin,))
    return raw.clone().view(dtype).reshape(shape)


# ---------------------------------------------------------------- pins

_pins: dict[Path, int] = {}  # path -> live holders
_pins_lock = threading.RLock()  # reentrant: a finalizer may run inside a locked section


def pin(path: Path, holder: object) -> None:
    """Keep `path` from eviction while `holder` is alive (a path may have several)."""
    path = Path(path).resolve()
    with _pins_lock:
        _pins[path] = _pins.get(path, 0) + 1
    weakref.finalize(holder, _unpin, path)


def _unpin(path: Path) -> None:
    with _pins_lock:
        left = _pins.pop(path, 0) - 1
        if left > 0:
            _pins[path] = left


def pinned() -> set[Path]:
    """The resolved paths that some live object in this process holds."""
    with _pins_lock:
        return set(_pins)


def read_meta(path: Path) -> dict[str, str]:
    """The metadata dict of a safetensors file."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
