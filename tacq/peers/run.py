"""A peer's variant, made in a child process so Cancel works (tacq.peers.worker).

The child runs the peer's own package on the model's folder; this side follows its
progress lines, kills it on Cancel, and builds the variant from the dequantized weights it
wrote: a copy of the model like every variant, sized by the peer's own storage (its scales
and zeros counted), held for the session (its codes live in the peer's format, so it is
exported as dequantized fp16, never as our packed checkpoint).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from safetensors.torch import load_file

from tacq.errors import TacqError
from tacq.formats.grid import GPTQConfig
from tacq.formats.sizes import size_report
from tacq.memory import resident_bytes
from tacq.models import LoadedModel, quantizable_linears, unquantized_params
from tacq.peers.registry import CALIBRATED, check_peer, dequantized_model, peer_format
from tacq.progress import Progress, no_progress
from tacq.quant.quantize import QuantResult
from tacq.quant.variant import Variant, VariantSpec

ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.5  # how often Cancel is checked while the child is silent


def _follow(proc: subprocess.Popen, lines: queue.Queue) -> None:
    for line in proc.stdout:
        lines.put(line)


def run_peer(
    lm: LoadedModel,
    peer: str,
    bits: int,
    group: int,
    texts: list[str],
    iters: int = 50,
    progress: Progress | None = None,
) -> tuple[dict, dict]:
    """(Linear name -> dequantized weight, what was run) from a child process.

    progress may raise Cancelled: the child is killed and nothing is kept.
    """
    progress = progress or no_progress
    check_peer(peer, bits, group)
    if not Path(lm.source).is_dir():
        raise TacqError("A peer quantizes a model loaded from a folder; this one is not.")
    with tempfile.TemporaryDirectory(prefix="tacq-peer-") as tmp:
        d = Path(tmp)
        (d / "texts.json").write_text(json.dumps(texts))
        cmd = [
            sys.executable,
            "-m",
            "tacq.peers.worker",
            "--model",
            lm.source,
            "--peer",
            peer,
            "--bits",
            str(bits),
            "--group",
            str(group),
            "--iters",
            str(iters),
            "--texts",
            str(d / "texts.json"),
            "--out",
            str(d / "out"),
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(d / "stderr.txt", "w") as err:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=str(ROOT)
            )
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=_follow, args=(proc, lines), daemon=True).start()
            frac, label = 0.0, f"{peer}: starting"
            try:
                while proc.poll() is None or not lines.empty():
                    try:
                        line = lines.get(timeout=POLL_S)
                    except queue.Empty:
                        line = ""
                    if line.startswith("progress "):
                        _, f, label = line.rstrip("\n").split(" ", 2)
                        frac = float(f)
                    progress(frac, label)  # raises Cancelled on Cancel
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        if proc.returncode != 0:
            tail = (d / "stderr.txt").read_text(errors="replace").strip().splitlines()[-3:]
            raise TacqError(f"{peer} failed: " + (" | ".join(tail) or f"exit {proc.returncode}"))
        weights = load_file(str(d / "out" / "weights.safetensors"))
        meta = json.loads((d / "out" / "run.json").read_text())
    return weights, meta


def make_peer_variant(
    lm: LoadedModel,
    peer: str,
    bits: int,
    group: int,
    texts: list[str],
    iters: int = 50,
    progress: Progress | None = None,
    task: str | None = None,
    examples: str | None = None,
) -> Variant:
    """A variant of `lm` quantized by a peer, named like ours ('hqq-2bit-g64').

    texts: calibration texts (prompt + answer) for the peers that read them; task and
    examples (the calibration digest) are recorded in its spec as for our variants.
    """
    weights, meta = run_peer(lm, peer, bits, group, texts, iters, progress)
    (progress or no_progress)(1.0, f"{peer}: loading its weights")
    names = list(quantizable_linears(lm.model))
    if sorted(weights) != sorted(names):
        raise TacqError(f"{peer} returned weights for other layers than this model's.")
    model = dequantized_model(lm.model, weights)
    shapes = [tuple(weights[n].shape) for n in names]
    fmt = peer_format(bits, group, meta["fmt"])
    size = size_report(shapes, [0] * len(names), bits, unquantized_params(lm.model), group, fmt)
    calibrated = peer in CALIBRATED
    spec = VariantSpec(
        bits,
        0.0,
        None,
        method=peer,
        group_size=group,
        task=task if calibrated else None,
        examples=examples if calibrated else None,
        base_model=lm.fingerprint,
    )
    # no codes of ours: the peer's live in its own format (layers stay empty)
    result = QuantResult({}, GPTQConfig(bits=bits, group_size=group), meta["seconds"])
    owned = resident_bytes(model, lm.model)
    return Variant(spec.name, model, result, size, spec, peer=meta, resident_bytes=owned)
