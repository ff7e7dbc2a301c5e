"""The command line's parser: one sub-parser per command, in three groups (the circuit,
quantizing and scoring, the machine), each group one function."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  python -m tacq tasks
  python -m tacq gradients --task antonyms
  python -m tacq scores --task antonyms --metric tacq --bits 2 --ratio 0.0035
  python -m tacq quantize --task antonyms --bits 2 --out out/antonyms-2bit
  python -m tacq eval --task antonyms --bits 2 --methods fp,rtn,gptq,tacq
  python -m tacq causal --task antonyms --bits 2 --control capitals
  python -m tacq stability --task antonyms --metric msg --across halves
  python -m tacq fit --task records --keep 0.9   # the smallest variant that keeps it
  python -m tacq run            # the default end-to-end study with stage times
  python -m tacq cache --clear  # list (or clear) the gradient and GPTQ caches
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="default",
        help="'default' (bundled SmolLM2-135M-Instruct) or a local HF folder",
    )
    p.add_argument("--task", default="antonyms", help="bundled task name (see `tasks`)")
    p.add_argument(
        "--data",
        help="your own examples: JSONL/CSV with prompt,answer and optionally split "
        "(calib/dev/heldout; rows without one: every 4th held out); overrides --task",
    )
    p.add_argument(
        "--style",
        choices=("completion", "chat"),
        default="completion",
        help="how --data prompts are shown to the model (default: completion)",
    )
    p.add_argument("--examples", type=int, default=32, help="calibration examples (default 32)")
    p.add_argument("--max-length", type=int, default=256, help="tokens per example (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="examples per gradient batch")
    p.add_argument("--answer-only", action="store_true", help="loss on answer tokens only")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument(
        "--device-map",
        choices=("auto", "balanced", "sequential"),
        help="let accelerate split a model too big for one GPU over the GPUs and host memory",
    )
    p.add_argument(
        "--max-memory",
        type=_max_memory,
        help="with --device-map: budget per device, e.g. '0=70GiB,1=70GiB,cpu=200GiB'",
    )
    p.add_argument(
        "--stream-to",
        help="keep the model on --device (e.g. cpu) and move one block at a time to this "
        "device (e.g. cuda) for GPTQ: for models larger than the GPU",
    )


def _max_memory(text: str) -> dict[int | str, str]:
    """'0=70GiB,cpu=200GiB' -> {0: '70GiB', 'cpu': '200GiB'} (accelerate's max_memory)."""
    budget: dict[int | str, str] = {}
    for part in filter(None, text.split(",")):
        dev, sep, amount = part.partition("=")
        if not sep or not amount.strip():
            raise argparse.ArgumentTypeError(f"expected DEVICE=AMOUNT, got {part!r}")
        dev = dev.strip()
        budget[int(dev) if dev.isdigit() else dev] = amount.strip()
    return budget


def _scored(p: argparse.ArgumentParser) -> None:
    """Which examples a score is read on: held-out to report, dev to tune settings."""
    p.add_argument(
        "--split",
        default="heldout",
        choices=("heldout", "dev"),
        help="score on the held-out split (default; report) or the dev split (tune)",
    )
    p.add_argument("--limit", type=int, help="score the first N examples of the split only")


def _quant(p: argparse.ArgumentParser, metric: bool = True) -> None:
    """The selection's flags (bit width, group size, ratio, score), from the Recipe."""
    from tacq.cli.recipe_flags import SELECTION_FIELDS, add_recipe_flags

    add_recipe_flags(p, tuple(f for f in SELECTION_FIELDS if metric or f != "metric"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tacq",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="TaCQ: task-aware low-bit quantization. Finds the weights a task "
        "depends on (its 'circuit') from per-sample gradients, keeps them in 16 "
        "bits and quantizes the rest to 2/3/4 bits with masked GPTQ.",
        epilog=EPILOG,
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _circuit_commands(sub)
    _quantize_commands(sub)
    _machine_commands(sub)
    return parser


def _circuit_commands(sub) -> None:
    """Gradients and what the circuit is: scores, heads, causal test, stability."""
    sub.add_parser("tasks", help="list bundled task sets")
    p = sub.add_parser("gradients", help="collect per-sample |grad| sums (cached)")
    _common(p)
    p = sub.add_parser("scores", help="rank weights by a saliency metric; print where they live")
    _common(p)
    _quant(p)
    p.add_argument("--top", type=int, default=10, help="how many Linears to list")
    p = sub.add_parser(
        "export-scores", help="scores, rankings and masks as safetensors, for notebooks"
    )
    _common(p)
    _quant(p, metric=False)
    p.add_argument("--metrics", default="tacq", help="comma list of metrics (default tacq)")
    p.add_argument("--out", required=True, help="output folder")
    p = sub.add_parser(
        "heads", help="the circuit per attention head or MLP neuron (kept weights, score)"
    )
    _common(p)
    _quant(p)
    p.add_argument(
        "--unit",
        default="query",
        choices=("query", "kv", "neurons"),
        help="query heads (q rows + o columns), key/value heads (k, v rows) or MLP neurons",
    )
    p.add_argument("--top", type=int, default=10, help="how many heads or neurons to list")
    p = sub.add_parser(
        "causal", help="damage only the circuit's weights (and same-size controls); measure"
    )
    _common(p)
    _quant(p)
    p.add_argument("--damage", default="round", choices=("round", "zero"))
    p.add_argument("--control", help="bundled control task (default: the first other one)")
    p.add_argument("--seeds", type=int, default=3, help="random same-count controls (default 3)")
    p.add_argument(
        "--scored",
        type=int,
        default=32,
        help="first N held-out examples of the task and the control (0: all; default 32)",
    )
    p = sub.add_parser(
        "stability",
        help="would other examples, scores or tasks give the same circuit? (Jaccard overlaps)",
    )
    _common(p)
    _quant(p)
    p.add_argument(
        "--across",
        default="halves",
        choices=("seeds", "halves", "metrics", "tasks"),
        help="calibration samples, the two halves of the examples, scores, or bundled tasks",
    )
    p.add_argument("--seeds", type=int, default=3, help="with --across seeds (default 3)")
    p.add_argument("--metrics", default="tacq,qal,msg,magnitude", help="with --across metrics")
    p.add_argument("--tasks", help="with --across tasks: comma list (default: all bundled)")


def _quantize_commands(sub) -> None:
    """Making variants and scoring them: quantize, fit, eval, run, demo."""
    from tacq.cli.recipe_flags import add_recipe_flags, add_settings_flag

    p = sub.add_parser(
        "quantize", aliases=["export"], help="quantize with masked GPTQ and save the model"
    )
    _common(p)
    add_recipe_flags(p, unset=True)
    add_settings_flag(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--format",
        default="packed",
        choices=("packed", "dequantized"),
        help="packed (small, needs tacq) or dequantized fp16 HF folder",
    )
    p = sub.add_parser(
        "fit", help="the smallest variant that keeps your task, chosen on dev examples"
    )
    _common(p)
    p.add_argument(
        "--keep",
        type=float,
        default=0.9,
        help="share of the original's dev exact match to keep (default 0.9)",
    )
    p.add_argument("--bits", default="2,3,4", help="bit widths to try, comma list (default 2,3,4)")
    p.add_argument(
        "--max-candidates", type=int, help="score at most N candidates (a quicker, partial look)"
    )
    p.add_argument("--out", help="save the chosen variant here (packed)")
    p.add_argument("--json", help="write the search and its answer to this JSON file")
    p = sub.add_parser("eval", help="held-out NLL / exact match / KL: fp vs quantized methods")
    _common(p)
    _quant(p, metric=False)
    _scored(p)
    p.add_argument(
        "--methods",
        default="fp,rtn,gptq,tacq",
        help="comma list from fp,rtn,gptq and any metric name (default fp,rtn,gptq,tacq)",
    )
    p = sub.add_parser("run", help="default end-to-end: gradients + TaCQ + held-out eval")
    _common(p)
    _quant(p)
    _scored(p)
    p = sub.add_parser(
        "demo", help="the app's one-click demo: TaCQ 3/2-bit + GPTQ 2-bit (per channel, g128), eval"
    )
    _common(p)
    p.add_argument(
        "--quick",
        action="store_true",
        help="8 examples, no 3-bit (and GPTQ g128 alone: see tacq.study.demo)",
    )


def _machine_commands(sub) -> None:
    """The machine: load a saved variant, plan a run, the caches."""
    p = sub.add_parser("load-check", help="load a packed folder; print BPW, size, an answer")
    p.add_argument("folder", help="a folder written by `quantize --format packed`")
    p.add_argument("--prompt", default="hot -> cold\nbig -> small\nfast ->")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p = sub.add_parser(
        "plan", help="estimated peak memory and time of each stage; refuses a run that will not fit"
    )
    p.add_argument(
        "--model",
        default="default",
        help="'default', a local HF folder (only config.json is read), or llama-3-8b",
    )
    p.add_argument("--examples", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--bits", type=int, default=2, choices=(2, 3, 4))
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when present")
    p.add_argument("--tflops", type=float, help="device throughput, if not measurable here")
    p.add_argument("--memory-gb", type=float, help="device memory to plan for (default: free)")
    p.add_argument(
        "--host-memory-gb",
        type=float,
        help="host memory of the machine planned for (default: this machine's free memory, "
        "unless --memory-gb or --tflops describe another machine: then not checked)",
    )
    p.add_argument("--accum-on-host", action="store_true", help="gradient sums in host memory")
    p.add_argument("--accum-bf16", action="store_true", help="gradient sums in bf16")
    p.add_argument(
        "--extra-stats",
        action="store_true",
        help="also sum g^2 and g in the same pass (Fisher, signed gradient, SqueezeLLM-like)",
    )
    p.add_argument("--tacq-only", action="store_true", help=argparse.SUPPRESS)  # now the default
    p = sub.add_parser("cache", help="size of the gradient and GPTQ caches; --clear empties them")
    p.add_argument(
        "--clear",
        nargs="?",
        const="all",
        choices=("all", "grads", "quant"),
        help="delete the cached files (all, or only grads or quant); they are recomputed on use",
    )
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
