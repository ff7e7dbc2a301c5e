"""The entry point: parse, run the command, turn a TacqError into one line and exit 1."""

from __future__ import annotations

import logging
import sys

from tacq.cli.admin import cmd_cache, cmd_plan
from tacq.cli.circuit import (
    cmd_causal,
    cmd_export_scores,
    cmd_gradients,
    cmd_heads,
    cmd_scores,
    cmd_stability,
    cmd_tasks,
)
from tacq.cli.parser import build_parser
from tacq.cli.quant import cmd_demo, cmd_eval, cmd_fit, cmd_load_check, cmd_quantize, cmd_run
from tacq.errors import TacqError

COMMANDS = {
    "tasks": cmd_tasks,
    "gradients": cmd_gradients,
    "scores": cmd_scores,
    "heads": cmd_heads,
    "causal": cmd_causal,
    "stability": cmd_stability,
    "export-scores": cmd_export_scores,
    "quantize": cmd_quantize,
    "export": cmd_quantize,
    "eval": cmd_eval,
    "load-check": cmd_load_check,
    "run": cmd_run,
    "plan": cmd_plan,
    "demo": cmd_demo,
    "fit": cmd_fit,
    "cache": cmd_cache,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not sys.stderr.isatty():  # a log: no redrawn bars from the libraries either
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        COMMANDS[args.command](args)
    except TacqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing partial was saved", file=sys.stderr)
        return 1
    return 0
