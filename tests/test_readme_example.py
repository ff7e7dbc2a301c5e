"""The README's library example runs as written on the bundled model (slow: one GPTQ)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def library_example() -> str:
    """The first python block of the README's 'Library and CLI' section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Library and CLI") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_example_uses_todays_signatures():
    code = library_example()
    compile(code, "README.md", "exec")
    assert "Selection(" in code and "study.quantize(recipe)" in code and "Recipe.of(sel)" in code


@pytest.mark.slow
def test_example_runs_and_prints_what_it_says():
    code = library_example()
    out = io.StringIO()
    scope: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    bpw_line, name_line = out.getvalue().splitlines()
    claimed = re.search(r"bpw_paper.*# ([\d.]+):", code).group(1)
    assert bpw_line == claimed  # the number written in the comment is the one printed
    variant = scope["variant"]
    assert name_line.startswith("tacq-2bit-0.35% ")
    assert variant.spec.examples == scope["study"].digest()
    assert variant.size.n_kept == int(0.0035 * variant.size.n_weights)
