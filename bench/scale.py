"""Measured scaling: the app's default path on random Llama models of three sizes.

Each shape is a `LlamaForCausalLM` with random fp32 weights built in memory from a config
dict (no download): SmolLM2-135M, SmolLM2-360M and TinyLlama-1.1B. Random weights make
quality meaningless: this bench is about time and memory only. Each shape runs in its own
process (so no shape inherits another's heap) from an empty $TACQ_HOME, through the
library as the app does: collect gradients (32 examples), reference 2-bit GPTQ, TaCQ
scores, masked 2-bit GPTQ, the packed variant (built and saved, as the app keeps it) and
32 tokens of chat. Per stage: wall time, peak RSS (VmHWM, reset between stages through
/proc/self/clear_refs), bytes written under $TACQ_HOME, and `tacq plan`'s estimate for
the same shape and settings with the throughput measured just before the shape ran.

The planner's CPU constants are fitted on the two small shapes and checked on the 1.1B
one; every stage's growth exponent of time and memory against parameter count is fitted
over the three.

    python bench/scale.py                       # measure every shape (about an hour)
    python bench/scale.py --shapes smollm2-135m # one shape; the others' rows are kept
    python bench/scale.py --summarize           # refit and redraw from scale.json only
Writes bench/results/scale.json and bench/results/scale.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, provenance, stamp, write_result

from tacq.quant.recipe import Recipe

RESULTS = ROOT / "bench" / "results"
# The HF configs' shapes; max_position_embeddings 2048 and rope defaults for all three.
SHAPES: dict[str, dict] = {
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    "smollm2-360m": dict(
        hidden_size=960,
        intermediate_size=2560,
        num_hidden_layers=32,
        num_attention_heads=15,
        num_key_value_heads=5,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    "tinyllama-1.1b": dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        vocab_size=32000,
        tie_word_embeddings=False,
    ),
}
FIT_ON = ("smollm2-135m", "smollm2-360m")  # the planner's CPU constants come from these
CHECK_ON = "tinyllama-1.1b"  # and are checked here
STAGES = ("collect", "reference GPTQ", "TaCQ scores", "masked GPTQ", "packed variant", "chat")
# tacq.study.plan's stages and the measured stages each one covers
PLAN_STAGES = {
    "gradients": ("collect",),
    "GPTQ reference + masked": ("reference GPTQ", "TaCQ scores", "masked GPTQ"),
    "packed variant": ("packed variant", "chat"),
}
TIMED_PLAN_STAGES = ("gradients", "GPTQ reference + masked")  # the plan gives 0 s to the rest
CHAT_PROMPT = "Give the opposite of: ancient"
BITS = 2
MEMORY_TOLERANCE, TIME_TOLERANCE = 0.25, 0.50  # the targets on the 1.1B shape
RSS_LIMIT = 3  # peak RSS at most 3x the model's fp32 bytes


# ---------------------------------------------------------------- model and tokenizer
def llama_config(shape: dict) -> dict:
    """A full Llama config dict from a shape: 2048 positions, rope and norm defaults."""
    return {"model_type": "llama", "max_position_embeddings": 2048, **shape}


def truncated_tokenizer(tokenizer, vocab: int, folder: Path):
    """`tokenizer` (byte-level BPE) cut to its first `vocab` ids, saved under and loaded
    from `folder`.

    SmolLM2's token ids run to 49151, past TinyLlama's 32,000 rows. Its BPE gives every
    merged token a larger id than its parts, so dropping the ids >= vocab and the merges
    that make them leaves a consistent, smaller BPE: the one its training would have given
    had it stopped at `vocab` tokens. Texts encode to a few more tokens; no id is out of range.
    """
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(str(folder))
    path = folder / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    bpe = spec["model"]
    bpe["vocab"] = {t: i for t, i in bpe["vocab"].items() if i < vocab}
    bpe["merges"] = [m for m in bpe["merges"] if "".join(_pair(m)) in bpe["vocab"]]
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < vocab]
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _pair(merge: list[str] | str) -> list[str]:
    """A merge as its two parts (tokenizers writes lists; older files 'a b' strings)."""
    return merge if isinstance(merge, list) else merge.split(" ", 1)


def build_lm(config: dict, tokenizer, name: str, seed: int = 0):
    """A LoadedModel around a random fp32 LlamaForCausalLM built from `config` (no file)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tacq.models import LoadedModel

    torch.manual_seed(seed)
    cfg = {k: v for k, v in config.items() if k != "model_type"}
    model = LlamaForCausalLM(LlamaConfig(**cfg)).to(torch.float32)
    model.eval().requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, name, "memory", f"scale-{name}-seed{seed}")


def shape_tokenizer(config: dict, folder: Path):
    """The bundled SmolLM2 tokenizer, cut to the shape's vocabulary when that is smaller."""
    from transformers import AutoTokenizer

    from tacq.models import default_model_dir

    tok = AutoTokenizer.from_pretrained(str(default_model_dir()), local_files_only=True)
    if config["vocab_size"] < len(tok):
        tok = truncated_tokenizer(tok, config["vocab_size"], folder)
    return tok


# ---------------------------------------------------------------- measuring
def peak_rss_bytes() -> int:
    """VmHWM: this process's peak resident set since start or the last reset."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def reset_peak_rss() -> None:
    """Start a new peak (Linux: writing 5 to clear_refs sets VmHWM to the current RSS)."""
    Path("/proc/self/clear_refs").write_text("5")


def folder_bytes(folder: Path) -> int:
    if not folder.exists():
        return 0
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


class Meter:
    """Wall time, peak RSS and bytes written under `home` of consecutive stages: each
    split ends one stage and starts the next."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.stages: dict[str, dict] = {}
        self._start()

    def _start(self) -> None:
        reset_peak_rss()
        self.t = time.perf_counter()
        self.disk = folder_bytes(self.home)

    def split(self, stage: str) -> None:
        seconds, peak = time.perf_counter() - self.t, peak_rss_bytes()
        written = folder_bytes(self.home) - self.disk
        self.stages[stage] = {
            "seconds": seconds,
            "peak_rss_bytes": peak,
            "disk_bytes": written,
            "load_1min": os.getloadavg()[0],  # this run's threads count too; above that: others
        }
        print(f"  {stage:<16} {seconds:8.1f} s  peak RSS {peak / 2**30:6.2f} GB  "
              f"disk {written / 2**20:8.1f} MB", flush=True)  # fmt: skip
        self._start()


def run_stages(lm, task, examples: int, new_tokens: int) -> dict:
    """The app's default path through the library, each stage measured; the caches are
    whatever $TACQ_HOME holds (the bench gives each shape an empty one)."""
    from app.chat_stream import stream_chat
    from tacq.cache import tacq_home
    from tacq.circuit.select import DEFAULT_RATIO, Selection
    from tacq.data.tasks import DataConfig
    from tacq.formats.export import save_packed
    from tacq.study.workflow import Study

    home = tacq_home()
    sel = Selection("tacq", BITS, DEFAULT_RATIO)
    study = Study(lm, task, DataConfig(max_examples=examples))
    lengths = [b.input_ids.shape[1] for b in study.batches()]
    meter = Meter(home)
    study.collect()
    meter.split("collect")
    study.references.get(BITS)
    meter.split("reference GPTQ")
    study.ranking(sel)
    meter.split("TaCQ scores")

    def gptq_done(frac: float, label: str) -> None:
        if frac >= 1.0 and label.startswith("gptq: done"):  # the variant is built after it
            meter.split("masked GPTQ")

    v = study.quantize(Recipe.of(sel), gptq_done)
    save_packed(home / "variants" / v.name, lm, v)  # as the app keeps a finished variant
    meter.split("packed variant")
    chat = [{"role": "user", "content": CHAT_PROMPT}]
    reply = ""
    for text in stream_chat(v.model, lm.tokenizer, chat, max_new_tokens=new_tokens):
        reply = text  # the growing reply; the last one is whole
    meter.split("chat")
    return {
        "stages": meter.stages,
        "batch_lengths": lengths,
        "calib_tokens": study.token_count(),
        "reply_tokens": len(lm.tokenizer(reply, add_special_tokens=False)["input_ids"]),
    }


def measure_shape(name: str, examples: int, new_tokens: int, task_name: str) -> dict:
    """One shape from an empty $TACQ_HOME, in this process: build, throughput, stages."""
    import torch

    from tacq.data.reading import load_task
    from tacq.memory import rss_bytes
    from tacq.shapes import Shapes
    from tacq.study.plan import measured_flops

    config = llama_config(SHAPES[name])
    home = Path(tempfile.mkdtemp(prefix=f"tacq-scale-{name}-"))
    os.environ["TACQ_HOME"] = str(home)
    try:
        task = load_task(task_name)
        tok = shape_tokenizer(config, home / "tokenizer")
        base_rss = rss_bytes()
        t = time.perf_counter()
        lm = build_lm(config, tok, name)
        built_s = time.perf_counter() - t
        flops = measured_flops(torch.device("cpu"), torch.float32)
        print(f"{name}: built in {built_s:.1f} s, {flops / 1e9:.0f} GFLOP/s", flush=True)
        run = run_stages(lm, task, examples, new_tokens)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    params = sum(p.numel() for p in lm.model.parameters())
    assert params == Shapes.from_config(config).params  # the plan counts this very model
    return {
        "shape": name,
        "config": config,
        "params": params,
        "fp32_bytes": 4 * params,
        "flops_per_s": flops,
        "threads": torch.get_num_threads(),
        "baseline_rss_bytes": base_rss,
        "build_s": built_s,
        "examples": examples,
        "new_tokens": new_tokens,
        "task": task_name,
        **run,
    }


def measure_in_child(name: str, args) -> dict:
    """measure_shape in a fresh Python process (no heap left by an earlier shape)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "shape.json"
        cmd = [sys.executable, __file__, "--one", name, "--out", str(out)]
        cmd += ["--examples", str(args.examples), "--tokens", str(args.tokens), "--task", args.task]
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text())


# ---------------------------------------------------------------- fitting and planning
def growth_exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x: y ~ x^slope."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    var = sum((a - mx) ** 2 for a in lx)
    if var == 0:
        raise ValueError("growth_exponent needs at least two different sizes")
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / var


def geometric_mean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def plan_settings(examples: int, max_length: int):
    """The plan's settings for this run on this CPU (fp32, shared memory, |g| sums)."""
    from tacq.study.plan import CPU_LATENCY_FACTOR, RunSettings

    return RunSettings(
        examples=examples,
        max_length=max_length,
        batch_size=8,
        bits=BITS,
        dtype_bytes=4,
        shared_memory=True,
        latency_factor=CPU_LATENCY_FACTOR,
    )


def plan_of(row: dict, max_length: int) -> dict[str, dict]:
    """tacq.study.plan's stages for a measured shape, with the throughput measured beside it."""
    from tacq.shapes import Shapes
    from tacq.study.plan import plan_run

    stages = plan_run(
        Shapes.from_config(row["config"]),
        plan_settings(row["examples"], max_length),
        row["flops_per_s"],
    )
    return {
        p.stage: {"bytes": p.device_bytes, "seconds": p.seconds, "flops": p.flops} for p in stages
    }


def measured_plan_stages(row: dict) -> dict[str, dict]:
    """The measured stages grouped as the plan's: the largest peak and the summed time."""
    st = row["stages"]
    return {
        plan: {
            "bytes": max(st[s]["peak_rss_bytes"] for s in parts),
            "seconds": sum(st[s]["seconds"] for s in parts),
        }
        for plan, parts in PLAN_STAGES.items()
    }


def fit_time_factors(rows: list[dict]) -> dict[str, float]:
    """Per timed plan stage: measured seconds over FLOPs / measured throughput, geometric
    mean over the FIT_ON shapes (what tacq.study.plan's CPU factors should be)."""
    out = {}
    for stage in TIMED_PLAN_STAGES:
        ratios = [
            r["measured"][stage]["seconds"] / (r["plan"][stage]["flops"] / r["flops_per_s"])
            for r in rows
            if r["shape"] in FIT_ON
        ]
        if ratios:
            out[stage] = geometric_mean(ratios)
    return out


def summarize(rows: list[dict]) -> dict:
    """Plans (at the calibration set's real length and at the 256-token cap), measured plan
    stages, their ratios, fitted factors, exponents and the targets, from measured rows."""
    from tacq.study import plan as P

    for r in rows:
        r["plan_max_length"] = max(r["batch_lengths"])
        r["plan"] = plan_of(r, r["plan_max_length"])
        r["plan_at_cap"] = plan_of(r, 256)
        r["measured"] = measured_plan_stages(r)
        r["estimate_over_measured"] = {
            s: {
                "bytes": r["plan"][s]["bytes"] / m["bytes"],
                "seconds": r["plan"][s]["seconds"] / m["seconds"]
                if s in TIMED_PLAN_STAGES
                else None,
            }
            for s, m in r["measured"].items()
        }
        r["peak_rss_bytes"] = max(s["peak_rss_bytes"] for s in r["stages"].values())
        r["total_s"] = sum(s["seconds"] for s in r["stages"].values())
    rows.sort(key=lambda r: r["params"])
    exponents = {}
    if len({r["params"] for r in rows}) > 1:
        params = [r["params"] for r in rows]
        for s in STAGES:
            exponents[s] = {
                "time": growth_exponent(params, [r["stages"][s]["seconds"] for r in rows]),
                "peak_rss": growth_exponent(
                    params, [r["stages"][s]["peak_rss_bytes"] for r in rows]
                ),
            }
    used = {"gradients": P.CPU_GRADIENT_FACTOR, "GPTQ reference + masked": P.CPU_LATENCY_FACTOR}
    return {
        "rows": rows,
        "exponents": exponents,
        "fitted_time_factors": fit_time_factors(rows),
        "time_factors_in_plan": used,
        "targets": targets(rows),
    }


def targets(rows: list[dict]) -> dict:
    """The issue's targets on the CHECK_ON shape (empty when it was not measured)."""
    r = next((r for r in rows if r["shape"] == CHECK_ON), None)
    if r is None:
        return {}
    ratios = r["estimate_over_measured"]
    memory_off = {s: v["bytes"] - 1 for s, v in ratios.items()}
    time_off = {s: ratios[s]["seconds"] - 1 for s in TIMED_PLAN_STAGES}
    return {
        "shape": CHECK_ON,
        "total_s": r["total_s"],
        "peak_rss_over_fp32": r["peak_rss_bytes"] / r["fp32_bytes"],
        "rss_limit_over_fp32": RSS_LIMIT,
        "rss_met": r["peak_rss_bytes"] <= RSS_LIMIT * r["fp32_bytes"],
        "memory_off": memory_off,
        "memory_met": all(abs(v) <= MEMORY_TOLERANCE for v in memory_off.values()),
        "time_off": time_off,
        "time_met": all(abs(v) <= TIME_TOLERANCE for v in time_off.values()),
    }


# ---------------------------------------------------------------- plot
def figure(rows: list[dict]):
    """Time and peak RSS per stage against parameter count, log-log; the plan's estimates
    of its stages as open markers."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["wall time, s", "peak RSS, GB"])
    params = [r["params"] / 1e6 for r in rows]
    for i, s in enumerate(STAGES):
        colour = COLOURS[i % len(COLOURS)]
        for col, key, scale in ((1, "seconds", 1), (2, "peak_rss_bytes", 2**30)):
            fig.add_scatter(
                x=params, y=[r["stages"][s][key] / scale for r in rows], name=s,
                mode="lines+markers", line={"color": colour}, legendgroup=s,
                showlegend=col == 1, row=1, col=col,
            )  # fmt: skip
    for i, p in enumerate(PLAN_STAGES):
        colour = COLOURS[(len(STAGES) + i) % len(COLOURS)]
        cols = (
            ((1, "seconds", 1), (2, "bytes", 2**30))
            if p in TIMED_PLAN_STAGES
            else ((2, "bytes", 2**30),)
        )
        for col, key, scale in cols:
            fig.add_scatter(
                x=params, y=[r["plan"][p][key] / scale for r in rows], name=f"plan: {p}",
                mode="markers", marker={"symbol": "circle-open", "size": 11, "color": colour},
                legendgroup=f"plan {p}", showlegend=col == cols[0][0],
                row=1, col=col,
            )  # fmt: skip
    for col in (1, 2):
        fig.update_xaxes(type="log", title_text="parameters, millions", row=1, col=col)
        fig.update_yaxes(type="log", row=1, col=col)
    fig.update_layout(
        width=1200, height=480, margin={"l": 60, "r": 20, "t": 70, "b": 50},
        title="Default path on random Llama shapes (2 CPU cores); open markers: tacq plan",
    )  # fmt: skip
    return fig


COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22"]  # fmt: skip


def draw(rows: list[dict]) -> None:
    from pareto import screenshot

    fig = figure(rows)
    with tempfile.TemporaryDirectory() as d:
        html, png = Path(d) / "scale.html", Path(d) / "scale.png"
        fig.write_html(html, include_plotlyjs=True, full_html=True)
        if screenshot(html, png, fig.layout.width, fig.layout.height):
            shutil.copy(png, RESULTS / "scale.png")
            print("wrote bench/results/scale.png")
        else:
            print("no chromium/playwright here: scale.png not drawn")


# ---------------------------------------------------------------- command line
def report(summary: dict) -> None:
    for r in summary["rows"]:
        print(f"{r['shape']}: {r['params'] / 1e6:.0f} M parameters, total {r['total_s']:.0f} s, "
              f"peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GB "
              f"({r['peak_rss_bytes'] / r['fp32_bytes']:.2f}x fp32)")  # fmt: skip
        for s, m in r["measured"].items():
            e = r["plan"][s]
            print(f"  {s:<24} measured {m['seconds']:7.1f} s {m['bytes'] / 2**30:6.2f} GB | "
                  f"plan {e['seconds']:7.1f} s {e['bytes'] / 2**30:6.2f} GB")  # fmt: skip
    print("fitted time factors:", summary["fitted_time_factors"])
    print("in tacq.study.plan:", summary["time_factors_in_plan"])
    print("targets:", json.dumps(summary["targets"], indent=1))


def merged(rows: list[dict], path: Path) -> list[dict]:
    """The new rows, and the stored measurements of shapes not measured again."""
    if not path.exists():
        return rows
    new = {r["shape"] for r in rows}
    kept = [r for r in json.loads(path.read_text())["rows"] if r["shape"] not in new]
    return [{k: r[k] for k in (*MEASURED_KEYS, "run") if k in r} for r in kept] + rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=32, help="new tokens of chat")
    ap.add_argument("--task", default="antonyms")
    ap.add_argument("--summarize", action="store_true", help="refit from scale.json, no runs")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a child process: measure one shape
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        row = measure_shape(args.one, args.examples, args.tokens, args.task)
        Path(args.out).write_text(json.dumps(row))
        return
    path = RESULTS / "scale.json"
    if args.summarize:
        old = json.loads(path.read_text())
        measured = [{k: r[k] for k in (*MEASURED_KEYS, "run") if k in r} for r in old["rows"]]
        summary = summarize(measured)
        old.update(summary, summarized=provenance())
        path.write_text(json.dumps(old, indent=2, default=float))
        print(f"rewrote {path.relative_to(ROOT)} (measurements kept)")
    else:
        from tacq.models import default_model_dir, models_dir

        os.environ.setdefault("TACQ_MODELS_DIR", str(models_dir()))  # keep the converted model
        default_model_dir()  # converted once, before any shape is timed
        rows = stamp([measure_in_child(name, args) for name in args.shapes.split(",")])
        summary = summarize(merged(rows, path))
        write_result("scale", summary)
    report(summary)
    draw(summary["rows"])


# what a child process measured; everything else in a row is derived by summarize
MEASURED_KEYS = (
    "shape", "config", "params", "fp32_bytes", "flops_per_s", "threads", "baseline_rss_bytes",
    "build_s", "examples", "new_tokens", "task", "stages", "batch_lengths", "calib_tokens",
    "reply_tokens",
)  # fmt: skip


if __name__ == "__main__":
    main()
