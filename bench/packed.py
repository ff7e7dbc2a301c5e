"""Packed variants in memory: what they hold, and how fast they chat, next to dense copies.

On the bundled SmolLM2 (antonyms calibration), TaCQ 2-bit and 3-bit at p = 0.35 %, and
3-bit with the unkept weights in a rotated (Hadamard) basis (tacq.quant.rotation):
- memory: each variant's own storages (tacq.memory.resident_bytes: codes, scales, zeros,
  kept values and indices; the shared original not counted) against the fp16 bytes of
  the quantizable Linears (target <= 20 % at 2 bits), cross-checked by the change in
  process RSS when the exported variant is loaded back onto the original (after
  malloc_trim), and the RSS change of a dense fp32 copy (the old way) beside them;
- speed: greedy chat tokens per second (batch 1, 32 new tokens after a short prompt) for
  the original, a dense 2-bit copy, and the packed variants dequantizing per forward
  (eager) and through the compiled one-token kernel (tacq.formats.packed); the compile time (the
  first generation, with an empty compile cache as on a first run) and the first-token
  latency are reported.

    python bench/packed.py

Writes bench/results/packed.json.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import os
import tempfile
import time
from pathlib import Path

# a fresh compile cache: the compile time reported is the one a first run pays
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="tacq-inductor-")

import torch  # noqa: E402
from _common import median, no_options, stamp, write_result

from tacq.quant.recipe import Recipe

PROMPT = "The capital of France is"
NEW_TOKENS = 32


def trimmed_rss() -> int:
    """RSS after a garbage collection and glibc's malloc_trim (freed memory handed back)."""
    from tacq.memory import rss_bytes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return rss_bytes() or 0


def tokens_per_s(model, ids, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
            )
        times.append(time.perf_counter() - t)
        assert out.shape[1] == ids.shape[1] + NEW_TOKENS
    return NEW_TOKENS / median(times)


def first_token_s(model, ids) -> float:
    times = []
    for _ in range(3):
        t = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, max_new_tokens=1, do_sample=False)
        times.append(time.perf_counter() - t)
    return median(times)


def main() -> None:
    no_options(__doc__)
    from tacq.circuit.select import Selection
    from tacq.data.reading import load_task
    from tacq.formats.export import save_packed
    from tacq.formats.packed import packed_modules, use_compiled_decoding
    from tacq.memory import resident_bytes
    from tacq.models import load_model, quantizable_linears
    from tacq.quant.variant import load_variant
    from tacq.study.workflow import Study

    lm = load_model()
    study = Study(lm, load_task("antonyms"))
    study.collect()
    linears = quantizable_linears(lm.model)
    fp16_linear = sum(2 * m.weight.numel() for m in linears.values())
    ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids
    variants = {f"{b}-bit": study.quantize(Recipe.of(Selection("tacq", b, 0.0035))) for b in (2, 3)}
    rotated = study.quantize(Recipe.of(Selection("tacq", 3, 0.0035), rotation="hadamard"))
    variants["3-bit rotated"] = rotated

    memory = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, v in variants.items():
            folder = save_packed(Path(tmp) / v.name, lm, v)
            before = trimmed_rss()
            back = load_variant(folder, lm.model)
            rss = trimmed_rss() - before
            memory[key] = {
                "variant": v.name,
                "resident_mb": v.resident_bytes / 2**20,
                "reloaded_resident_mb": back.resident_bytes / 2**20,
                "rss_change_mb": rss / 2**20,
                "share_of_fp16_linears": v.resident_bytes / fp16_linear,
                "packed_file_mb": v.size.total_bytes / 2**20,
            }
            del back
    before = trimmed_rss()
    dense = copy.deepcopy(lm.model)
    with torch.no_grad():
        for name, mod in packed_modules(variants["2-bit"].model).items():
            dense.get_submodule(name).weight.copy_(mod.dequantize())
    dense_rss = trimmed_rss() - before
    memory["dense 2-bit copy (before)"] = {
        "resident_mb": resident_bytes(dense) / 2**20,
        "rss_change_mb": dense_rss / 2**20,
        "share_of_fp16_linears": resident_bytes(dense) / fp16_linear,
    }
    for k, m in memory.items():
        print(f"{k}: {m}")

    speed: dict[str, dict] = {}
    use_compiled_decoding(False)
    for label, model in [
        ("original (fp32)", lm.model),
        ("dense 2-bit copy", dense),
        ("packed 2-bit, eager", variants["2-bit"].model),
        ("packed 3-bit, eager", variants["3-bit"].model),
        ("packed 3-bit rotated, eager", rotated.model),
    ]:
        speed[label] = {
            "tokens_per_s": tokens_per_s(model, ids),
            "first_token_s": first_token_s(model, ids),
        }
        print(label, speed[label], flush=True)
    use_compiled_decoding(True)
    for key in variants:
        model = variants[key].model
        t = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, max_new_tokens=2, do_sample=False)
        compile_s = time.perf_counter() - t
        label = f"packed {key}, compiled"
        speed[label] = {
            "tokens_per_s": tokens_per_s(model, ids),
            "first_token_s": first_token_s(model, ids),
            "compile_s": compile_s,
        }
        print(label, speed[label], flush=True)
    use_compiled_decoding(False)
    dense_tps = speed["dense 2-bit copy"]["tokens_per_s"]
    for s in speed.values():
        s["vs_dense"] = s["tokens_per_s"] / dense_tps
    (run,) = stamp([{}])
    write_result(
        "packed",
        {
            "fp16_linear_mb": fp16_linear / 2**20,
            "memory": memory,
            "speed": speed,
            "prompt": PROMPT,
            "new_tokens": NEW_TOKENS,
            "run": run["run"],
        },
    )


if __name__ == "__main__":
    main()
