"""Record every attempt of a Python process to reach a host other than loopback.

`audit_env(folder)` writes a sitecustomize.py there and returns the environment that makes
a child Python process load it: an audit hook (PEP 578) sees each socket.connect, sendto
and getaddrinfo and appends non-loopback ones to folder/network.log. Tests then assert the
log is empty: the app and the CLI never touch the network.
"""

from __future__ import annotations

from pathlib import Path

HOOK = """
import sys

_LOG = {log!r}
_LOCAL = {{"127.0.0.1", "localhost", "::1", "0.0.0.0", "", None}}


def _host(address):
    if isinstance(address, tuple) and address:
        return address[0]
    return None  # AF_UNIX paths and the like are local


def _audit(event, args):
    if event in ("socket.connect", "socket.sendto"):
        host = _host(args[1] if event == "socket.connect" else args[-1])
    elif event == "socket.getaddrinfo":
        host = args[0]
    else:
        return
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host not in _LOCAL and not str(host).startswith("127."):
        with open(_LOG, "a") as f:
            f.write(f"{{event}} {{host}}\\n")


sys.addaudithook(_audit)
"""


def audit_env(folder: Path, env: dict | None = None) -> dict:
    """Environment for a child process whose non-loopback network attempts are logged."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(HOOK.format(log=str(folder / "network.log")))
    base = dict(os.environ if env is None else env)
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), base.get("PYTHONPATH")]))
    return base


def attempts(folder: Path) -> list[str]:
    log = folder / "network.log"
    return log.read_text().splitlines() if log.exists() else []
