"""Checks on a local model folder before anything in it is read as weights: paths, file
kinds, config sizes, safetensors headers and shapes, room to load, and the folder's
fingerprint. Why apart from tacq.models: what a user points the app at is untrusted input,
and every refusal with its message lives here, in front of the loader.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from pathlib import Path

import torch

from tacq.errors import TacqError

SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo")

MAX_PATH_CHARS = 1024  # a model path longer than this is refused before any file call
MAX_CONFIG_BYTES = 1 << 20  # config.json files are a few kB
MAX_INDEX_BYTES = 16 << 20  # a sharded index lists each tensor once: well under 16 MB
MAX_HEADER_BYTES = 100_000_000  # safetensors' own bound on a header
MAX_FOLDER_ENTRIES = 10_000  # a model folder holds tens of files
MAX_DIM = 1 << 24  # no config size (hidden, layers, vocab, ...) is near 16 M
SAFE_WEIGHTS, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
CHAT_TEMPLATE_DIR = "additional_chat_templates"  # the tokenizer reads *.jinja files here too
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
DTYPE_BYTES = {  # safetensors dtypes of whole bytes
    **dict.fromkeys(("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0"), 1),
    **dict.fromkeys(("U16", "I16", "F16", "BF16"), 2),
    **dict.fromkeys(("U32", "I32", "F32"), 4),
    **dict.fromkeys(("U64", "I64", "F64", "C64"), 8),
}


def check_model_path(source: str) -> None:
    """Refuse a path that no file call should see (a typed or posted value)."""
    if not isinstance(source, str) or len(source) > MAX_PATH_CHARS or "\x00" in source:
        raise TacqError(
            f"The model path is too long or malformed (at most {MAX_PATH_CHARS} characters)."
        )


def check_outside(folder: Path, root: Path) -> None:
    """Refuse a model folder inside the app's workspace: uploads land there in folders named
    by their bytes' hash, so two uploads could build a 'model' (links resolved both sides)."""
    if Path(folder).resolve().is_relative_to(Path(root).resolve()):
        raise TacqError(
            f"{folder} is inside the app's workspace, where uploaded files are kept; "
            "load a model from a folder outside it."
        )


def _regular(path: Path) -> os.stat_result:
    """stat (links followed) and demand a regular file: a FIFO or device blocks any read
    forever (the safetensors reader even holds the GIL while it waits)."""
    try:
        info = os.stat(path)
    except OSError as e:
        raise TacqError(f"{path} cannot be read ({e.strerror}).") from e
    if not stat.S_ISREG(info.st_mode):
        raise TacqError(f"{path} is not a regular file (a pipe, device or socket?); refused.")
    return info


def _open_regular(path: Path):
    """Open a file known to be regular; O_NONBLOCK and fstat again, so a file swapped for
    a FIFO after the stat is refused instead of blocking."""
    _regular(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise TacqError(f"{path} cannot be read ({e.strerror}).") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise TacqError(f"{path} is not a regular file (a pipe, device or socket?); refused.")
    return os.fdopen(fd, "rb")


def _read_json(path: Path, limit: int) -> object:
    """A small JSON file: regular, at most `limit` bytes, any parse failure a TacqError."""
    if _regular(path).st_size > limit:
        raise TacqError(f"{path} is not a regular file under {limit >> 20} MB; not a model file.")
    try:
        with _open_regular(path) as fh:
            return json.loads(fh.read(limit + 1))
    except RecursionError as e:
        raise TacqError(f"{path} is too deeply nested to be a model file.") from e
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError included
        raise TacqError(f"{path} is not valid JSON: {e}") from e


def check_folder_files(folder: Path) -> None:
    """Every file a load may open (config, tokenizer files, weights, index, chat templates)
    must be a regular file: checked with stat before anything is opened."""
    count = 0
    for sub in (folder, folder / CHAT_TEMPLATE_DIR):
        if sub != folder and not sub.is_dir():
            continue
        try:
            entries = list(os.scandir(sub))
        except OSError as e:
            raise TacqError(f"{sub} cannot be listed ({e.strerror}).") from e
        count += len(entries)
        if count > MAX_FOLDER_ENTRIES:
            raise TacqError(f"{folder} holds over {MAX_FOLDER_ENTRIES} files; not a model.")
        for entry in entries:
            if not entry.is_dir():  # a link to a folder is a folder; a broken link is not
                _regular(Path(entry.path))


def check_model_dir(folder: Path) -> dict:
    """Validate a local HF folder before loading it; return its config dict."""
    check_model_path(str(folder))
    if not folder.is_dir():
        raise TacqError(
            f"Model folder not found: {folder}. Give a local Hugging Face folder "
            "with config.json and *.safetensors, or 'default'."
        )
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise TacqError(f"{folder} has no config.json; expected a Hugging Face model folder.")
    check_folder_files(folder)
    config = _read_json(cfg_path, MAX_CONFIG_BYTES)
    if not isinstance(config, dict):
        raise TacqError(f"{cfg_path} is not a JSON object; not a model config.")
    if "auto_map" in config:
        raise TacqError(
            f"{folder} asks for remote code (auto_map in config.json); "
            "tacq never runs code shipped with a model."
        )
    if "transformers_weights" in config:
        raise TacqError(
            f"{cfg_path} names its own weight file (transformers_weights: "
            f"{str(config['transformers_weights'])[:80]!r}); tacq loads only model.safetensors "
            "or a sharded model.safetensors.index.json, never pickle weights."
        )
    mtype = config.get("model_type")
    if mtype not in SUPPORTED_TYPES:
        raise TacqError(
            f"Unsupported model type {str(mtype)[:80]!r} in {folder}; supported: "
            f"{', '.join(SUPPORTED_TYPES)} (decoder-only causal LMs)."
        )
    if not list(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        extra = (
            f" (found pickle weights {', '.join(pickles[:3])}, which tacq never loads: "
            "convert them to safetensors)"
            if pickles
            else ""
        )
        raise TacqError(f"{folder} has no *.safetensors weights{extra}.")
    return config


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files transformers will read: model.safetensors, else the shards its
    index names (each a plain *.safetensors name in the folder: an index naming a .bin
    would make transformers torch.load a pickle)."""
    if (folder / SAFE_WEIGHTS).exists():
        return [folder / SAFE_WEIGHTS]
    index_path = folder / SAFE_INDEX
    if not index_path.exists():
        raise TacqError(
            f"{folder} has no {SAFE_WEIGHTS} or {SAFE_INDEX} (what transformers loads)."
        )
    index = _read_json(index_path, MAX_INDEX_BYTES)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise TacqError(f"{index_path} has no weight_map; not a safetensors index.")
    names = sorted({str(v) for v in weight_map.values()})
    for name in names:
        if not name.endswith(".safetensors") or "/" in name or "\\" in name or name[0] == ".":
            raise TacqError(
                f"{index_path} names {name[:80]!r}, not a *.safetensors file in the folder; "
                "tacq loads safetensors only (never pickle weights)."
            )
    return [folder / n for n in names]


def read_header(path: Path) -> dict[str, dict]:
    """The tensors a safetensors file declares ({name: {dtype, shape, data_offsets}}), read
    from its header alone (8-byte little-endian length, then JSON), each checked to fit."""
    bad = f"{path.name} is not a safetensors file (damaged or truncated header)"
    with _open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            n = int.from_bytes(fh.read(8), "little")
            raw = fh.read(n) if size >= 8 and n <= min(MAX_HEADER_BYTES, size - 8) else None
        except OSError as e:
            raise TacqError(f"{path} cannot be read ({e.strerror}).") from e
    if raw is None:
        raise TacqError(f"{bad}: {path}")
    try:
        header = json.loads(raw)
    except RecursionError as e:
        raise TacqError(f"{bad}: too deeply nested.") from e
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError included
        raise TacqError(f"{bad}: {e}") from e
    if not isinstance(header, dict):
        raise TacqError(f"{bad}: {path}")
    header.pop("__metadata__", None)
    for name, info in header.items():
        _check_entry(path, name, info, size - 8 - n)
    return header


def _check_entry(path: Path, name: str, info: object, data_bytes: int) -> None:
    """One header entry: a known dtype, a shape of whole numbers, and bytes inside the file."""
    ok = isinstance(info, dict) and info.get("dtype") in DTYPE_BYTES
    shape, offsets = (info.get("shape"), info.get("data_offsets")) if ok else (None, None)
    ok = ok and isinstance(shape, list) and all(_whole(d, 0) for d in shape)
    ok = ok and isinstance(offsets, list) and len(offsets) == 2
    ok = ok and all(_whole(o, 0) for o in offsets) and offsets[0] <= offsets[1]
    if not ok:
        raise TacqError(f"{path.name}: the header entry of {name[:80]} is malformed.")
    numel = 1
    for d in shape:
        numel *= d
    if offsets[1] > data_bytes or offsets[1] - offsets[0] != numel * DTYPE_BYTES[info["dtype"]]:
        raise TacqError(
            f"{path.name}: tensor {name[:80]} of shape {tuple(shape)} does not fit the file's "
            f"{data_bytes} data bytes (damaged or truncated)."
        )


def _whole(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _size(cfg, name: str) -> int:
    """A size field of the config: a positive whole number (no bool, no float, no list)."""
    value = getattr(cfg, name, None)
    if not _whole(value, 1) or value > MAX_DIM:
        raise TacqError(f"config.json: {name} must be a whole number from 1 to {MAX_DIM}.")
    return value


def expected_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """The weight shapes transformers builds for a Llama-style config (names without the
    'model.' prefix; lm_head included even when tied). Phi-3 fuses q/k/v and gate/up."""
    hidden, inter = _size(cfg, "hidden_size"), _size(cfg, "intermediate_size")
    heads = _size(cfg, "num_attention_heads")
    kv = _size(cfg, "num_key_value_heads") if getattr(cfg, "num_key_value_heads", None) else heads
    head_dim = _size(cfg, "head_dim") if getattr(cfg, "head_dim", None) else hidden // heads
    vocab = _size(cfg, "vocab_size")
    shapes = {"embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden)}
    for i in range(_size(cfg, "num_hidden_layers")):
        att, mlp = f"layers.{i}.self_attn.", f"layers.{i}.mlp."
        if cfg.model_type == "phi3":
            shapes[att + "qkv_proj.weight"] = ((heads + 2 * kv) * head_dim, hidden)
            shapes[mlp + "gate_up_proj.weight"] = (2 * inter, hidden)
        else:
            shapes[att + "q_proj.weight"] = (heads * head_dim, hidden)
            shapes[att + "k_proj.weight"] = shapes[att + "v_proj.weight"] = (kv * head_dim, hidden)
            shapes[mlp + "gate_proj.weight"] = shapes[mlp + "up_proj.weight"] = (inter, hidden)
        shapes[att + "o_proj.weight"] = (hidden, heads * head_dim)
        shapes[mlp + "down_proj.weight"] = (hidden, inter)
    return shapes


def _hf_config(config: dict):
    """The transformers config the load will build (its class defaults fill what config.json
    leaves out: a bare {"model_type": "llama"} is a 7B model)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.for_model(**config)
    except RecursionError as e:
        raise TacqError("config.json is too deeply nested to be a model config.") from e
    except Exception as e:  # noqa: BLE001 - a config's validators raise many error types
        raise TacqError(f"config.json does not describe a valid model: {e}") from e


def check_shapes(folder: Path, config: dict) -> int:
    """Refuse, from the safetensors headers alone, weights that do not match the model the
    config describes, before anything is built: a config declaring 3000 layers beside a
    small file would allocate the whole model first. -> the weights' parameter count."""
    found: dict[str, tuple[int, ...]] = {}
    for path in weight_files(folder):
        for name, info in read_header(path).items():
            found[name.removeprefix("model.")] = tuple(info["shape"])
    layers = len({n.split(".")[1] for n in found if n.startswith("layers.")})
    _check_layer_count(config.get("num_hidden_layers"), layers)  # before the config is built
    cfg = _hf_config(config)
    _check_layer_count(_size(cfg, "num_hidden_layers"), layers)  # a class default included
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for name, want in expected_shapes(cfg).items():
        have = found.get(name)
        if have is None and not (tied and name == "lm_head.weight"):
            raise TacqError(f"The weights lack {name}, which config.json implies; refused.")
        if have is not None and have != want:
            raise TacqError(
                f"{name} has shape {have} in the weights, but config.json implies {want}; "
                "the config does not belong to these weights."
            )
    return sum(math.prod(shape) for shape in found.values())


def check_room_to_load(
    n_params: int, device: torch.device, dtype: torch.dtype, folder: Path
) -> None:
    """Refuse, with the numbers, a model whose weights alone would not fit where they go:
    before loading, not by a dead process or an out-of-memory error halfway through."""
    from tacq.memory import available_bytes

    need = n_params * dtype.itemsize
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_bytes()
    if free is not None and need * 1.1 > free:
        kind = str(dtype).removeprefix("torch.")
        raise TacqError(
            f"{folder.name} has {n_params / 1e9:.2f} B parameters: {need / 2**30:.1f} GB in "
            f"{kind} on {device.type}, and {free / 2**30:.1f} GB are free there. "
            f"`python -m tacq plan --model {folder}` shows what each stage needs."
        )


def _check_layer_count(declared: object, layers: int) -> None:
    if _whole(declared, 0) and declared > layers:
        raise TacqError(
            f"config.json declares {declared} decoder layers, but the weights hold {layers}; "
            "the config does not belong to these weights."
        )


def fingerprint(folder: Path) -> str:
    """sha256 over config.json and each weight file's name, size, head and tail (fast).

    Each file is checked to be regular before it is opened: a FIFO named *.safetensors
    beside real weights would otherwise block here, and the whole heavy queue with it."""
    with _open_regular(folder / "config.json") as fh:
        h = hashlib.sha256(fh.read())
    for f in sorted(folder.glob("*.safetensors")):
        with _open_regular(f) as fh:
            size = os.fstat(fh.fileno()).st_size
            h.update(f"{f.name}:{size}".encode())
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]
