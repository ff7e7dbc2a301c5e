"""The package's import graph: layers import only downward, no circle is added, and
`import tacq` is the public API.

Imports inside functions count too: a lazy import that closes a circle or reaches up a
layer hides a layering mistake as well as a top-level one does.
"""

from __future__ import annotations

import ast
from pathlib import Path

TACQ = Path(__file__).resolve().parent.parent / "tacq"

# Bottom to top: a module may import its own layer and those below it, never one above.
LAYERS = ["base", "data", "eval", "formats", "circuit", "quant", "peers", "study", "cli"]

# Circles still in the graph, each closed by one lazy import; none may be added.
KNOWN_CIRCLES = {
    frozenset({"cache", "cache_admin"}),  # writing a cache entry enforces the cap
    frozenset({"memory", "model_files", "models"}),  # loading checks free memory first
    frozenset({"formats.packed", "formats.held"}),  # a packed Linear made from a held layer
    # an "auto" accumulator chosen per pass
    frozenset({"circuit.accumulators", "circuit.gradients"}),
}


def module_name(path: Path) -> str:
    """tacq/quant/gptq.py -> "quant.gptq"; tacq/cache.py -> "cache"."""
    return ".".join(path.relative_to(TACQ).with_suffix("").parts)


def layer(module: str) -> str:
    """The layer a module sits in: its subpackage, or "base" for a top-level module
    (`python -m tacq`, tacq/__main__.py, is the command line's entry)."""
    if module == "__main__":
        return "cli"
    return module.split(".")[0] if "." in module else "base"


def imports() -> dict[str, set[str]]:
    """tacq module ("quant.gptq") -> the tacq modules it imports anywhere in its text."""
    modules = {module_name(p) for p in TACQ.rglob("*.py") if p.name != "__init__.py"}
    graph = {}
    for path in TACQ.rglob("*.py"):
        if path.name == "__init__.py":
            continue
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                base = node.module.removeprefix("tacq").lstrip(".")
                names = [f"{base}.{a.name}".lstrip(".") for a in node.names] + [base]
            elif isinstance(node, ast.Import):
                names = [a.name.removeprefix("tacq").lstrip(".") for a in node.names]
            if node_is_tacq(node):
                deps |= {n for n in names if n in modules}
        graph[module_name(path)] = deps - {module_name(path)}
    return graph


def node_is_tacq(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return bool(node.module) and (node.module == "tacq" or node.module.startswith("tacq."))
    if isinstance(node, ast.Import):
        return any(a.name.startswith("tacq.") for a in node.names)
    return False


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
    assert frozenset({"circuit.gradients", "circuit.distributed"}) not in found
    assert found <= KNOWN_CIRCLES, found - KNOWN_CIRCLES


def test_imports_run_only_down_the_layers():
    graph = imports()
    assert len(graph) > 40 and {layer(m) for m in graph} == set(LAYERS), sorted(graph)
    upward = sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        for d in deps
        if LAYERS.index(layer(d)) > LAYERS.index(layer(m))
    )
    assert not upward, upward


def test_the_layer_check_sees_an_upward_import():
    assert layer("quant.gptq") == "quant" and layer("cache") == "base"
    assert LAYERS.index(layer("study.plan")) > LAYERS.index(layer("circuit.accumulators"))


def test_the_circle_finder_finds_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}


def test_import_tacq_is_the_public_api():
    import tacq

    for name in tacq.__all__:
        assert getattr(tacq, name) is not None, name
    want = {"Study", "Recipe", "load_model", "load_task", "read_examples", "TacqError"}
    assert want | {"save_packed", "load_quantized"} <= set(tacq.__all__)
