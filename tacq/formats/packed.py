"""A quantized Linear computed from its packed codes: what a variant holds in memory.

Why: a dense fp32 copy per variant makes a "2-bit" model as large in memory as the
original. Here each quantized Linear keeps only its bit-packed codes (2, 3 or 4 bits per
weight), its scale (fp16) and zero (uint8) per row or per group of input columns, and the
kept weights as fp16 values at int32 flat indices; its weight is dequantized for each
forward and dropped after (the allocator reuses the space; one layer's dense weight
exists at a time). A variant is the original model with its quantized Linears swapped
for these modules and every other tensor shared, not copied.

Codes are packed per row, eight codes to `bits` bytes (a little-endian bitstream, low
bits first); a row is padded to a multiple of eight codes.

The saved checkpoint (tacq.formats.export, format 2) is smaller still: zeros at b bits and a kept
count per row instead of flat indices. In memory zeros stay uint8 and indices int32, as
the one-token kernel reads them; that costs 1 - b/8 byte per group (0.6 MB on
SmolLM2-135M at g128) and 2 bytes per kept weight, and tacq.memory counts it.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from tacq.errors import TacqError
from tacq.formats.grid import LayerQuant, per_column
from tacq.formats.orthogonal import Rotation, stored_rotation

log = logging.getLogger(__name__)

CODES_PER_WORD = 8  # codes per packed word of `bits` bytes


def packed_row_bytes(in_features: int, bits: int) -> int:
    """Bytes per packed row: ceil(in / 8) words of `bits` bytes."""
    return -(-in_features // CODES_PER_WORD) * bits


def pack_rows(codes: Tensor, bits: int) -> Tensor:
    """(out, in) codes in [0, 2^bits) -> (out, packed_row_bytes) uint8."""
    out_f, in_f = codes.shape
    c = nn.functional.pad(codes.to(torch.int64), (0, (-in_f) % CODES_PER_WORD))
    shifts = bits * torch.arange(CODES_PER_WORD, device=codes.device)
    word = (c.view(out_f, -1, CODES_PER_WORD) << shifts).sum(-1)  # disjoint bits: sum = or
    byte_shifts = 8 * torch.arange(bits, device=codes.device)
    return ((word[..., None] >> byte_shifts) & 255).to(torch.uint8).view(out_f, -1)


def unpack_rows(packed: Tensor, bits: int, in_features: int) -> Tensor:
    """(out, packed_row_bytes) uint8 -> (out, in) int32 codes."""
    out_f = packed.shape[0]
    b = packed.view(out_f, -1, bits).to(torch.int32)
    word = b[..., 0]
    for i in range(1, bits):  # a 4-bit word fills 32 bits: the top byte wraps, the & below
        word = word | (b[..., i] << (8 * i))  # keeps only each code's own bits
    shifts = bits * torch.arange(CODES_PER_WORD, device=packed.device, dtype=torch.int32)
    codes = (word[..., None] >> shifts) & (2**bits - 1)
    return codes.view(out_f, -1)[:, :in_features]


class PackedLinear(nn.Module):
    """y = x W_q^T + b with W_q dequantized from packed codes at each forward."""

    def __init__(
        self,
        packed: Tensor,
        scale: Tensor,
        zero: Tensor,
        kept_index: Tensor,
        kept_values: Tensor,
        bits: int,
        in_features: int,
        group_size: int | None = None,
        bias: nn.Parameter | None = None,
        rotation: tuple[str, int] | None = None,
    ) -> None:
        super().__init__()
        if packed.dtype != torch.uint8 or packed.shape[1] != packed_row_bytes(in_features, bits):
            raise TacqError("Packed codes have the wrong type or row length.")
        self.bits, self.in_features, self.group_size = bits, in_features, group_size
        self.out_features = packed.shape[0]
        self.register_buffer("packed", packed)
        self.register_buffer("scale", scale.to(torch.float16))
        self.register_buffer("zero", zero.to(torch.uint8))
        self.register_buffer("kept_index", kept_index.to(torch.int32))
        self.register_buffer("kept_values", kept_values.to(torch.float16))
        self.bias = bias  # the original Linear's own Parameter (shared), or None
        self.rotation = rotation  # (kind, seed): the codes are of W_r R (LayerQuant.rotation)
        if rotation is not None:  # drawn from the seed: nothing of it is stored in the file
            R = stored_rotation(in_features, rotation)
            self.register_buffer("rot_signs", R.signs, persistent=False)
            self.register_buffer("rot_mix", R.mix, persistent=False)
            self.register_buffer("rot_hadamard", R.hadamard, persistent=False)

    @classmethod
    def from_layer(cls, lq: LayerQuant, bias: nn.Parameter | None = None) -> PackedLinear:
        from tacq.formats.held import PackedLayerQuant

        held = PackedLayerQuant.from_layer(lq)  # as it is when already held packed
        return cls(
            held.packed,
            held.scale,
            held.zero,
            held.kept_index,
            held.kept_values,
            held.bits,
            held.in_features,
            lq.group_size,
            bias,
            lq.rotation,
        )

    def layer(self) -> LayerQuant:
        """The unpacked LayerQuant (codes and a bool mask per weight): for export and tests."""
        codes = unpack_rows(self.packed, self.bits, self.in_features).to(torch.uint8)
        mask = torch.zeros(codes.numel(), dtype=torch.bool, device=codes.device)
        mask[self.kept_index.long()] = True
        return LayerQuant(
            codes,
            self.scale.float(),
            self.zero.float(),
            mask.view(codes.shape),
            self.kept_values.clone(),
            self.bits,
            None,
            self.group_size,
            self.rotation,
        )

    def _rotation(self) -> Rotation:
        return Rotation(self.rot_signs, self.rot_mix, self.rot_hadamard)

    def grid(self) -> Tensor:
        """s (codes - z), (out, in) fp32, without kept weights (LayerQuant.grid)."""
        codes = unpack_rows(self.packed, self.bits, self.in_features)
        s, z = (
            per_column(t.float(), self.in_features, self.group_size)
            for t in (self.scale, self.zero)
        )
        return s * (codes.float() - z)

    def dequantize(self) -> Tensor:
        """W_q (out, in) fp32, equal to LayerQuant.dequantize of the same layer."""
        W = self.grid()
        if self.rotation is None:
            W.view(-1)[self.kept_index] = self.kept_values.float()
            return W
        W = self._rotation().unapply(W)
        W.view(-1).index_add_(0, self.kept_index.long(), self.kept_values.float())
        return W

    def forward(self, x: Tensor) -> Tensor:
        # fp32 whatever the activations' dtype: on a bf16 model (CUDA) neither the grid
        # values nor the fp16 kept weights are rounded to bf16; the output is cast back.
        bias = None if self.bias is None else self.bias.float()
        if self.rotation is not None:  # x R through the grid, the kept weights on x itself
            y = self._rotated_product(x.float())
            return (y if bias is None else y + bias).to(x.dtype)
        if _DECODE["compiled"] and x.numel() == x.shape[-1] and self._matvec_ok(x):
            xf = x.reshape(1, -1).float()
            y = _one_token(xf, xf, self._matvec_args(), True)
            if y is not None:
                y = y.view(*x.shape[:-1], self.out_features)
                return (y if bias is None else y + bias).to(x.dtype)
        return nn.functional.linear(x.float(), self.dequantize(), bias).to(x.dtype)

    def _rotated_product(self, x: Tensor) -> Tensor:
        """grid (x R) + W_k x for x (..., in) fp32: one compiled call for one token when on."""
        xr = self._rotation().apply(x)
        if _DECODE["compiled"] and x.numel() == x.shape[-1] and self._matvec_ok(x):
            y = _one_token(xr.reshape(1, -1), x.reshape(1, -1), self._matvec_args(), False)
            if y is not None:
                return y.view(*x.shape[:-1], self.out_features)
        return nn.functional.linear(xr, self.grid()) + self._kept_product(x)

    def _kept_product(self, x: Tensor) -> Tensor:
        """x (..., in) fp32 @ W_k^T for the sparse kept weights (a rotated layer's)."""
        idx = self.kept_index.long()
        rows, cols = idx // self.in_features, idx % self.in_features
        y = x.new_zeros(*x.shape[:-1], self.out_features)
        return y.index_add_(-1, rows, x[..., cols] * self.kept_values.float())

    def _matvec_ok(self, x: Tensor) -> bool:
        g = self.group_size
        whole_groups = g is None or (g % CODES_PER_WORD == 0 and self.in_features % g == 0)
        return x.device.type == "cpu" and self.in_features % CODES_PER_WORD == 0 and whole_groups

    def _matvec_args(self) -> tuple:
        words = self.packed.shape[1] // self.bits
        per_group = words if self.group_size is None else self.group_size // CODES_PER_WORD
        return (self.packed, self.scale, self.zero, self.kept_index, self.kept_values,
                self.bits, per_group)  # fmt: skip

    def extra_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.group_size else ""
        r = f", rotation={self.rotation[0]}" if self.rotation else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bits={self.bits}{g}, kept={len(self.kept_index)}{r}"
        )


class PackedLayers(Mapping):
    """name -> LayerQuant, unpacked from a model's PackedLinear modules when asked for.

    Why: a QuantResult's layers, without holding a byte and a bool per weight in memory.
    """

    def __init__(self, modules: dict[str, PackedLinear]) -> None:
        self.modules = modules

    def __getitem__(self, name: str) -> LayerQuant:
        return self.modules[name].layer()

    def __iter__(self) -> Iterator[str]:
        return iter(self.modules)

    def __len__(self) -> int:
        return len(self.modules)


def packed_modules(model: nn.Module) -> dict[str, PackedLinear]:
    """name -> PackedLinear of a packed variant, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, PackedLinear)}


def packed_model(model: nn.Module, layers: Mapping[str, LayerQuant]) -> nn.Module:
    """`model` with the Linears named in `layers` replaced by PackedLinear modules.

    Every other tensor (embeddings, norms, lm_head, biases) is the original's own, shared:
    the module tree is copied with a memo that maps each parameter and buffer to itself.
    """
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    out = copy.deepcopy(model, memo)
    for name, lq in layers.items():
        lin = out.get_submodule(name)
        if not isinstance(lin, nn.Linear):
            raise TacqError(f"{name} is not a Linear of this model.")
        device = lin.weight.device
        out.set_submodule(name, PackedLinear.from_layer(lq, lin.bias).to(device))
    return out


def dense_copy(model: nn.Module) -> nn.Module:
    """A full, independent copy of a packed variant with plain nn.Linear weights (the
    dequantized ones): what a dequantized fp16 export writes. Nothing is shared, so the
    copy can be cast or moved without touching the original's tensors."""
    out = copy.deepcopy(model)
    for name, mod in packed_modules(out).items():
        lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
        lin = lin.to(mod.packed.device)
        with torch.no_grad():
            lin.weight.copy_(mod.dequantize())
            if mod.bias is not None:
                lin.bias.copy_(mod.bias)
        out.set_submodule(name, lin.requires_grad_(False))
    return out


# ---------------------------------------------------------------- one-token decoding

_DECODE = {"compiled": False, "fn": None}

# Context variables that kernels (0.19) and transformers (5.x) read on every forward and
# swap for one process-wide global while torch.compiler.is_compiling() is true.
_COMPILE_AWARE_VARS = (
    ("kernels._internals.layer.layer", "_ACTIVE_KERNEL_FUNCS"),
    ("transformers.utils.output_capturing", "_active_collector"),
)


def per_thread_forward_state() -> None:
    """Make the libraries' compile-aware context variables plain per-thread ContextVars.

    Why: is_compiling() is one process-wide flag, true for a whole torch.compile session in
    any thread (our compiled decoding builds its kernel during warm-up or a chat's first
    token). A forward in another thread meanwhile stores its state in the shared global,
    and each thread's reset then hands the others a foreign value: transformers 5.25 +
    kernels 0.19.1 crashed evaluating beside the warm-up ("'_contextvars.Token' object has
    no attribute 'get'"). We never compile a whole model, only packed_matvec, so the
    global fallback is never needed; tokens stay valid (the same ContextVar). Idempotent;
    called before our one torch.compile, so importing tacq.formats.packed costs nothing.
    """
    import importlib

    for module_name, attr in _COMPILE_AWARE_VARS:
        try:
            var = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            continue  # that library version has no such variable: nothing to make safe
        plain = getattr(var, "context_var", None)
        if plain is not None:
            var.get, var.set, var.reset = plain.get, plain.set, plain.reset


def use_compiled_decoding(on: bool = True) -> None:
    """One-token forwards on CPU (chat decoding) through a compiled kernel that reads the
    packed codes directly, without building the layer's weight (torch.compile; the first
    token of each layer shape pays its compile time). Off: dequantize, then matmul."""
    _DECODE["compiled"] = on


# One thread at a time in the compiled kernel, compiling or running: dynamo (torch 2.13) is
# not thread-safe (pytorch#118260, #136833): its per-call flags are process-wide and a
# compile in one thread rewrites the cache another thread is walking. The app decodes in
# several threads (side-by-side chat, a new variant's warm-up); each waits its turn.
KERNEL_LOCK = threading.RLock()
RECOMPILE_LIMIT = 64  # graphs per function: layer shape x bits x group size x basis


def _one_token(x: Tensor, x_kept: Tensor, args: tuple, replace: bool) -> Tensor | None:
    """The compiled kernel's output; None (and compiled decoding off from then on) when
    this machine cannot compile (no C++ compiler, an unsupported platform)."""
    kept_index, kept_values = args[3], args[4]
    with KERNEL_LOCK:
        if _DECODE["fn"] is None:
            per_thread_forward_state()  # before any compile session: see its docstring
            _DECODE["fn"] = torch.compile(packed_matvec, dynamic=False)
        # dynamo's config is per thread (torch >= 2.12): a few variants of one model pass
        # the default of 8 graphs in whichever thread decodes, and would fall back to eager.
        if torch._dynamo.config.recompile_limit < RECOMPILE_LIMIT:
            torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
        torch._dynamo.maybe_mark_dynamic(kept_index, 0)  # one kernel for any kept count
        torch._dynamo.maybe_mark_dynamic(kept_values, 0)
        try:
            return _DECODE["fn"](x, x_kept, *args, replace)
        except Exception as e:  # inductor raises many kinds when no toolchain works
            log.warning("Compiled decoding is off: it failed here (%s); dequantizing instead.", e)
            _DECODE["compiled"] = False
            return None


def warm_up(model: nn.Module) -> None:
    """One one-token forward, so the compiled kernel of each layer shape is built before
    the first chat message (the app runs it in the background for each new variant)."""
    if not _DECODE["compiled"] or not packed_modules(model):
        return
    device = next(iter(packed_modules(model).values())).packed.device
    with torch.no_grad():
        model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device))


def packed_matvec(
    x: Tensor,
    x_kept: Tensor,
    packed: Tensor,
    scale: Tensor,
    zero: Tensor,
    kept_index: Tensor,
    kept_values: Tensor,
    bits: int,
    group_words: int,
    replace: bool,
) -> Tensor:
    """x (1, in) @ W_grid^T, read from the packed words (in and groups whole words of 8
    codes), plus the kept weights on x_kept (1, in): replacing the grid values at their
    positions (replace, x_kept is x) or added to them (a rotated layer: x is x R).

    y[o] = sum_g s[o,g] (sum_{i in g} x_i c_oi - z[o,g] sum_{i in g} x_i), one code plane
    (the k-th code of every word) at a time. Written for torch.compile, which fuses it into
    loops over the packed bytes; eager it is slow.
    """
    out_f = packed.shape[0]
    b = packed.view(out_f, -1, bits).to(torch.int32)
    word = b[..., 0]
    for i in range(1, bits):
        word = word | (b[..., i] << (8 * i))  # (out, words)
    groups = word.shape[1] // group_words
    xw = x.view(word.shape[1], CODES_PER_WORD)
    acc = None
    for k in range(CODES_PER_WORD):
        c = ((word >> (bits * k)) & (2**bits - 1)).float().view(out_f, groups, group_words)
        t = (c * xw[:, k].view(1, groups, group_words)).sum(-1)  # (out, groups)
        acc = t if acc is None else acc + t
    xsum = xw.sum(-1).view(groups, group_words).sum(-1)  # (groups,)
    s, z = scale.float().view(out_f, groups), zero.float().view(out_f, groups)
    y = ((acc - z * xsum) * s).sum(-1)
    idx = kept_index.long()
    in_f = xw.numel()
    rows, cols = idx // in_f, idx % in_f
    kept = x_kept[0, cols] * kept_values.float()
    if replace:
        word_at = word[rows, cols // CODES_PER_WORD] >> (bits * (cols % CODES_PER_WORD))
        g = cols // (group_words * CODES_PER_WORD)
        grid = s[rows, g] * ((word_at & (2**bits - 1)).float() - z[rows, g])
        kept = kept - x[0, cols] * grid
    return y.index_add(0, rows, kept)[None]
