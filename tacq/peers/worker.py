"""One peer quantization in its own process: python -m tacq.peers.worker ...

Why a process: a peer package runs long loops we cannot interrupt from outside, so the
app runs it here and Cancel ends the process. Reads the model from its folder
(safetensors), runs the peer by its own package, writes the dequantized weights of the
quantized Linears (weights.safetensors) and what was run (run.json). Progress goes to
stdout as 'progress <fraction> <label>' lines; errors to stderr, exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def say(frac: float, label: str) -> None:
    print(f"progress {frac:.3f} {label}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tacq.peers.worker")
    ap.add_argument("--model", required=True, help="model folder")
    ap.add_argument("--peer", required=True)
    ap.add_argument("--bits", type=int, required=True)
    ap.add_argument("--group", type=int, required=True)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--texts", help="JSON list of calibration texts (calibrated peers)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from safetensors.torch import save_file

    from tacq.errors import TacqError
    from tacq.models import load_model, quantizable_linears
    from tacq.peers.registry import PEERS, check_peer, package_version

    try:
        check_peer(args.peer, args.bits, args.group)
        say(0.05, "loading the model")
        lm = load_model(args.model, "cpu")
        texts = json.loads(Path(args.texts).read_text()) if args.texts else []
        say(0.15, f"{args.peer} {args.bits}-bit g{args.group}: quantizing")
        t = time.perf_counter()
        run = PEERS[args.peer][2](
            lm.model,
            list(quantizable_linears(lm.model)),
            args.bits,
            args.group,
            tokenizer=lm.tokenizer,
            texts=texts,
            iters=args.iters,
        )
        seconds = time.perf_counter() - t
        say(0.9, "writing the dequantized weights")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in run.weights.items()}, str(out / "weights.safetensors")
        )
        meta = {
            "package": package_version(args.peer),
            "settings": run.settings,
            "fmt": run.fmt,
            "used": run.used,
            "seconds": seconds,
        }
        (out / "run.json").write_text(json.dumps(meta))
        say(1.0, "done")
    except TacqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
