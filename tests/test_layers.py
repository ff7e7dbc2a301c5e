"""The package's import graph: no import runs back up, and `import tacq` is the public API.

Imports inside functions count too: a lazy import that closes a circle hides a layering
mistake as well as a top-level one does.
"""

from __future__ import annotations

import ast
from pathlib import Path

TACQ = Path(__file__).resolve().parent.parent / "tacq"

# Circles still in the graph, each closed by one lazy import; none may be added.
KNOWN_CIRCLES = {
    frozenset({"cache", "cache_admin"}),  # writing a cache entry enforces the cap
    frozenset({"memory", "models"}),  # loading checks free memory first
    frozenset({"packed", "held"}),  # a packed Linear made from a held layer
    frozenset({"accumulators", "gradients"}),  # an "auto" accumulator chosen per pass
}


def imports() -> dict[str, set[str]]:
    """tacq module -> the tacq modules it imports anywhere in its text."""
    graph = {}
    for path in TACQ.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            deps |= {n.split(".")[1] for n in names if n.startswith("tacq.")}
        graph[path.stem] = deps - {path.stem}
    return graph


def circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.add(frozenset(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_new_import_circle():
    found = circles(imports())
    assert frozenset({"gradients", "distributed"}) not in found
    assert found <= KNOWN_CIRCLES, found - KNOWN_CIRCLES


def test_the_circle_finder_finds_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}


def test_import_tacq_is_the_public_api():
    import tacq

    for name in tacq.__all__:
        assert getattr(tacq, name) is not None, name
    want = {"Study", "Recipe", "load_model", "load_task", "read_examples", "TacqError"}
    assert want | {"save_packed", "load_quantized"} <= set(tacq.__all__)
