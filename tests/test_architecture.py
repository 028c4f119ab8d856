"""The package's shape: no import cycles, no imports hidden in functions to dodge one, the
run-folder module below every stage, and modules small enough to hold one idea."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "posturescreen"
MAX_LINES = 400
# imported only where used on purpose: optional extras and the web server
OPTIONAL = {"mlflow", "mediapipe", "ray", "uvicorn"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _targets(node: ast.AST, modules: dict[str, Path]) -> list[str]:
    """posturescreen modules an import statement loads (the submodule when a name is one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        out = []
        for a in node.names:
            sub = f"{node.module}.{a.name}"
            out.append(sub if sub in modules else node.module)
        return [m for m in out if m in modules]
    return []


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Edges module -> imported posturescreen modules, and imports found inside functions."""
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    nested: list[str] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            for target in _targets(node, modules):
                edges[name].add(target)
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        mod = node.module if isinstance(node, ast.ImportFrom) else \
                            node.names[0].name
                        if (mod or "").split(".")[0] not in OPTIONAL:
                            nested.append(f"{name}.{fn.name}: import {mod}")
    return edges, nested


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None (depth-first search with colours)."""
    colour = dict.fromkeys(edges, 0)
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if n == m or n.startswith(m + "."):
                continue  # a package's __init__ importing its own submodules
            if colour.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if colour.get(n) == 0:
                found = visit(n)
                if found:
                    return found
        colour[m] = 2
        stack.pop()
        return None

    for m in sorted(edges):
        if colour[m] == 0:
            found = visit(m)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"p": {"p.x"}, "p.x": set()}) is None


def test_no_import_cycles():
    edges, _ = import_graph()
    assert find_cycle(edges) is None


def test_no_imports_inside_functions():
    _, nested = import_graph()
    assert not nested, nested


def test_runfolder_imports_no_stage():
    edges, _ = import_graph()
    allowed = {"posturescreen", "posturescreen.config", "posturescreen.errors"}
    assert edges["posturescreen.runfolder"] <= allowed, edges["posturescreen.runfolder"]


def test_stages_import_the_pipeline_never():
    edges, _ = import_graph()
    importers = {m for m, targets in edges.items() if "posturescreen.pipeline" in targets}
    assert all(m.startswith("posturescreen.cli") or m == "posturescreen.demo"
               for m in importers), importers


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: p.name)
def test_modules_are_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(SRC)}: {n} lines"
