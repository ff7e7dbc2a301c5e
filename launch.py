"""Start TaCQ Studio in the browser: python launch.py [--port 7860] [--model PATH].

Runs fully offline: no hub downloads, no telemetry, binds 127.0.0.1, never a share link.
"""

from __future__ import annotations

import argparse
import os
import sys

# Before gradio / transformers are imported: they read these at import time.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# OpenMP keeps its default wait policy (short spins): jobs run on worker threads of this
# process and, with no pool left on the main thread (app.main.off_main_thread), they run as
# fast as from the CLI and no slower beside a chat reply than with sleeping threads
# (PASSIVE, 1.4x slower on an idle CPU; bench/omp_wait.py).


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="TaCQ Studio: task-aware quantization in the browser")
    p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    p.add_argument(
        "--model",
        default="default",
        help="'default' (bundled SmolLM2-135M-Instruct) or a local HF folder",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1); another one serves a network and "
        "needs --allow-host, --auth-file and --models-root (see README, Serving on a LAN)",
    )
    p.add_argument("--workspace", help="where user examples and exports are saved")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name clients use to reach the app; NAME:PORT where that port differs "
        "(a TLS proxy in front) (repeat; required with --host)",
    )
    p.add_argument(
        "--auth-file",
        help="file of user:password lines; required with --host beyond this machine",
    )
    p.add_argument(
        "--models-root",
        help="only folders under this one may be loaded from the Model screen; required "
        "with --host beyond this machine",
    )
    p.add_argument(
        "--eager-decoding",
        action="store_true",
        help="chat without the compiled one-token kernel of packed variants (no warm-up "
        "compile; about 3x slower tokens)",
    )
    args = p.parse_args(argv)

    from pathlib import Path

    from app.workspace import prepare  # before gradio is imported: it sets GRADIO_TEMP_DIR
    from tacq.cache import tacq_home

    workspace = Path(args.workspace) if args.workspace else tacq_home() / "workspace"
    prepare(workspace)

    from app.main import launch
    from tacq.errors import TacqError

    try:
        auth = read_auth_file(Path(args.auth_file)) if args.auth_file else None
        launch(
            args.model,
            args.host,
            args.port,
            workspace,
            allowed_hosts=args.allow_host,
            auth=auth,
            models_root=Path(args.models_root) if args.models_root else None,
            compiled_decoding=not args.eager_decoding,
        )
    except TacqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def read_auth_file(path) -> list[tuple[str, str]]:
    """user:password pairs, one per line (a file, so passwords stay out of `ps`)."""
    from tacq.errors import TacqError

    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise TacqError(f"Cannot read the auth file {path}: {e.strerror}.") from e
    pairs = [tuple(line.split(":", 1)) for line in lines if line.strip()]
    if not pairs or any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise TacqError(f"The auth file {path} must hold user:password lines.")
    return pairs


if __name__ == "__main__":
    sys.exit(main())
