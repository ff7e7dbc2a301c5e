"""Packed TaCQ checkpoints (really small) and dequantized fp16 exports (load anywhere).

Packed folder: config.json (with quantization_config), tokenizer files, and one
model.safetensors holding, per quantized Linear, the b-bit codes as a packed bitstream,
an fp16 scale and a b-bit zero (a bitstream too) per row or group, and the kept weights
as CSR (a uint16 kept count per row, int16 column indices, fp16 values); every other
tensor in fp16. Only safetensors and JSON are read back, and every tensor is checked
before use.

Format 2 (FORMAT_VERSION). Format 1 stored one uint8 zero per row or group and int32 row
pointers (out + 1); it still loads, to the same bits. Zeros are integers in [0, 2^b), so
packing them at b bits loses nothing: at g128 and 3 bits it saves 0.04 bits per weight,
the row counts another 0.02 on SmolLM2-135M.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from tacq.errors import TacqError
from tacq.formats.grid import LayerQuant
from tacq.formats.layer_store import FORMAT_VERSION, layer_from_tensors, layer_tensors
from tacq.formats.orthogonal import ROTATION_KINDS, rotation_seed
from tacq.formats.packed import dense_copy, packed_model

WEIGHTS_FILE = "model.safetensors"


# ---------------------------------------------------------------- folders


def _write_folder(out: Path, write) -> None:
    """Write into a temp folder, then rename: a crash leaves no half export."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unquantized_state(model, quant_names: set[str]) -> dict[str, Tensor]:
    """Every tensor that stays in 16 bits, tied copies once (fp16)."""
    seen, out = set(), {}
    for name, p in model.state_dict(keep_vars=True).items():
        module, _, leaf = name.rpartition(".")
        if (module in quant_names and leaf != "bias") or id(p) in seen:
            continue
        seen.add(id(p))
        out[name] = p.detach().to(torch.float16).cpu().contiguous()
    return out


def save_packed(out: str | Path, lm, variant) -> Path:
    """A packed TaCQ checkpoint of `variant` (a tacq.quant.variant.Variant) made from `lm`."""
    from tacq import __version__

    if getattr(variant, "peer", None):
        raise TacqError(
            f"{variant.name} was quantized by {variant.peer.get('package') or 'a peer'}, whose "
            "codes are in its own format: export it as dequantized fp16."
        )
    layers = variant.result.layers
    tensors = _unquantized_state(variant.model, set(layers))
    shapes = {}
    for name, lq in layers.items():
        tensors |= layer_tensors(name, lq)
        shapes[name] = [*lq.codes.shape, lq.bits]
    config = variant.model.config.to_dict()
    config["quantization_config"] = {
        "quant_method": "tacq",
        "format_version": FORMAT_VERSION,
        "tacq_version": __version__,
        **variant.spec.to_config(),  # read back unchanged by VariantSpec.from_config
        "variant_name": variant.name,
        "layers": shapes,
    }
    config["dtype"] = "float16"

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "tacq-packed"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        lm.tokenizer.save_pretrained(str(tmp))

    _write_folder(Path(out), write)
    return Path(out)


def save_dequantized(out: str | Path, lm, variant) -> Path:
    """A plain fp16 HF folder any tool loads (it carries the quantization error, not the size win)."""

    def write(tmp: Path) -> None:
        model = dense_copy(variant.model).to(torch.float16)
        model.save_pretrained(str(tmp), safe_serialization=True)
        lm.tokenizer.save_pretrained(str(tmp))
        (tmp / "README.md").write_text(
            f"# {variant.name} (dequantized)\n\nfp16 weights of a {variant.spec.bits}-bit "
            f"model ({(variant.peer or {}).get('package') or 'TaCQ Studio'}): they carry its quantization error but not its size win. Loads with plain "
            "transformers.AutoModelForCausalLM.from_pretrained.\n"
        )

    _write_folder(Path(out), write)
    return Path(out)


def folder_bytes(folder: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def load_quantized(folder: str | Path, device: str | None = None):
    """Load a packed TaCQ folder into a transformers model whose quantized Linears stay
    packed (tacq.formats.packed.PackedLinear): it holds the checkpoint's packed size in memory.

    Returns the model; its dequantized weights are bit-identical to the in-memory variant's.
    """
    return read_packed(folder, device)[0]


def _read_folder(folder: str | Path) -> tuple[dict, dict, dict[str, Tensor]]:
    """-> (config, quantization_config, every tensor of the file), checked to be ours."""
    from tacq.model_files import check_model_dir

    folder = Path(folder)
    config = check_model_dir(folder)
    qc = config.get("quantization_config") or {}
    if qc.get("quant_method") != "tacq" or not isinstance(qc.get("layers"), dict):
        raise TacqError(f"{folder} is not a packed TaCQ checkpoint (no tacq quantization_config).")
    path = folder / WEIGHTS_FILE
    try:
        with safe_open(str(path), framework="pt") as f:
            t = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several error types for a damaged file
        raise TacqError(f"{path} is damaged or truncated: {e}") from e
    return config, qc, t


def _read_layers(qc: dict, t: dict[str, Tensor], model) -> dict[str, LayerQuant]:
    """Every quantized Linear of `model` from the file's tensors, shapes checked."""
    from tacq.models import quantizable_linears

    linears = quantizable_linears(model)
    layers = qc["layers"]
    if set(layers) != set(linears):
        raise TacqError("The checkpoint's layer list does not match its config.")
    kind, seed = qc.get("rotation"), qc.get("rotation_seed", 0)
    if kind is not None and (kind not in ROTATION_KINDS or not isinstance(seed, int)):
        raise TacqError(f"Unknown rotation {kind!r} (seed {seed!r}); the config is damaged.")
    version = format_version(qc)
    quant = {}
    for name, lin in linears.items():
        out_f, in_f, bits = layers[name]
        if (out_f, in_f) != tuple(lin.weight.shape):
            raise TacqError(f"{name}: stored shape {(out_f, in_f)} does not match the config.")
        group = qc.get("group_size")  # absent in early format-1 files: per channel
        rotation = None if kind is None else (kind, rotation_seed(seed, name))
        quant[name] = layer_from_tensors(
            name, t, (out_f, in_f), int(bits), group, rotation, version
        )
    return quant


def format_version(qc: dict) -> int:
    """The file's format (1 when absent), refused when newer than this code reads."""
    version = qc.get("format_version", 1)
    if not isinstance(version, int) or version < 1:
        raise TacqError(f"Unknown format version {version!r}; the config is damaged.")
    if version > FORMAT_VERSION:
        raise TacqError(
            f"This checkpoint was written by a newer TaCQ Studio (format {version}; this "
            f"one reads formats 1 to {FORMAT_VERSION}). Update TaCQ Studio to load it."
        )
    return version


def _check_tensor(name: str, x: Tensor, like: Tensor) -> None:
    if x.dtype != torch.float16 or tuple(x.shape) != tuple(like.shape):
        raise TacqError(f"Tensor {name} has the wrong dtype or shape.")


def read_packed(folder: str | Path, device: str | None = None):
    """-> (model with PackedLinear modules, quantization_config), built from the file alone."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tacq.models import pick_device

    config, qc, t = _read_folder(folder)
    cfg_dict = {k: v for k, v in config.items() if k != "quantization_config"}
    hf_config = AutoConfig.for_model(**cfg_dict)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    quant = _read_layers(qc, t, model)
    state = {}
    for name, p in model.state_dict().items():
        if name.removesuffix(".weight") in quant:
            continue
        if name in t:
            _check_tensor(name, t[name], p)
            state[name] = t[name].float()
    missing = model.load_state_dict(state, strict=False).missing_keys
    model.tie_weights()
    params = dict(model.named_parameters(remove_duplicate=False))
    missing = [
        m
        for m in missing
        if m.removesuffix(".weight") not in quant and (m not in params or not _is_tied(model, m))
    ]
    if missing:
        raise TacqError(f"The checkpoint lacks {len(missing)} tensor(s), e.g. {missing[0]}.")
    model.requires_grad_(False)
    model = packed_model(model, quant)  # the dense Linears are dropped here
    return model.to(pick_device(device)).eval(), qc


def read_packed_onto(folder: str | Path, base) -> tuple:
    """-> (variant model, quantization_config): the file's packed Linears on `base`, the
    model it was made from, whose other tensors the variant shares (as a freshly made
    variant does). Each stored unquantized tensor must be base's own rounded to fp16."""
    _, qc, t = _read_folder(folder)
    quant = _read_layers(qc, t, base)
    for name, p in base.state_dict().items():
        module, _, leaf = name.rpartition(".")
        if name not in t or (module in quant and leaf != "bias"):
            continue
        _check_tensor(name, t[name], p)
        if not torch.equal(t[name], p.detach().to(torch.float16).cpu()):
            raise TacqError(f"{folder} was made from another model ({name} differs).")
    return packed_model(base, quant).eval(), qc


def _is_tied(model, name: str) -> bool:
    return name == "lm_head.weight" and getattr(model.config, "tie_word_embeddings", False)


def describe_packed(folder: str | Path) -> dict:
    """Bits, kept weights, paper BPW and bytes of a packed folder (reads headers only)."""
    from tacq.formats.sizes import paper_bpw

    folder = Path(folder)
    path = folder / WEIGHTS_FILE
    try:
        qc = json.loads((folder / "config.json").read_text())["quantization_config"]
        layers = qc["layers"]
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            kept = sum(
                f.get_slice(f"{n}.kept_values").get_shape()[0]
                for n in layers
                if f"{n}.kept_values" in keys
            )
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise TacqError(f"{folder} is not a readable packed TaCQ checkpoint: {e}") from e
    n = sum(int(o) * int(i) for o, i, _ in layers.values())
    bits = int(qc["bits"])
    return {
        "bits": bits,
        "group size": qc.get("group_size"),
        "ratio": qc.get("ratio"),
        "metric": qc.get("metric"),
        "task": qc.get("task"),
        "quantized weights": n,
        "kept weights": kept,
        "BPW (paper)": round(paper_bpw(bits, kept / max(n, 1)), 4),
        "weights file MB": round(path.stat().st_size / 2**20, 2),
        "folder MB": round(folder_bytes(folder) / 2**20, 2),
    }


@dataclass
class LoadCheck:
    info: dict  # describe_packed of the folder
    answer: str  # greedy completion of the prompt by the loaded model
    seconds: float  # time to load model and tokenizer


def load_check(folder: str | Path, prompt: str, device: str | None = None) -> LoadCheck:
    """Load a packed folder as a user would and answer one prompt: proof the export works."""
    from transformers import AutoTokenizer

    from tacq.eval.evaluate import generate_batch

    t = time.perf_counter()
    info = describe_packed(folder)
    from tacq.memory import resident_bytes

    model = load_quantized(folder, device)
    info["in memory MB"] = round(resident_bytes(model) / 2**20, 2)  # packed + the rest
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    seconds = time.perf_counter() - t
    return LoadCheck(info, generate_batch(model, tok, [prompt], "completion", 16)[0], seconds)
