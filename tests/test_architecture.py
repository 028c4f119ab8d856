"""The package's shape: no import cycles, no imports hidden in functions to dodge one, the
run-folder module below every stage, and modules small enough to hold one idea."""

import ast
import re
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


# The packages bottom to top: each imports only packages below it (or itself).
LAYERS = (
    ("posturescreen", "errors", "files", "progress"),
    ("config",),
    ("data",),
    ("stats",),
    ("posture",),
    ("models",),
    ("runfolder",),
    ("study",),
    ("explain",),
    ("report",),
    ("screening",),
    ("pipeline", "demo"),
    ("cli",),
    ("__main__",),
)


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "posturescreen"


def layer_of(module: str) -> int:
    for k, names in enumerate(LAYERS):
        if _top(module) in names:
            return k
    raise AssertionError(f"{module}: its package is in no layer of LAYERS")


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in edges.items() for t in targets
                  if layer_of(t) > layer_of(m))


def test_layer_check_finds_a_planted_upward_import():
    planted = {"posturescreen.stats.metrics": {"posturescreen.config.study",
                                               "posturescreen.study.jobs"}}
    assert upward_imports(planted) == ["posturescreen.stats.metrics -> posturescreen.study.jobs"]


def test_every_module_is_in_a_layer():
    edges, _ = import_graph()
    for m in edges:
        layer_of(m)


def test_each_package_imports_only_packages_below_it():
    edges, _ = import_graph()
    assert not upward_imports(edges)


def test_packages_of_one_layer_do_not_import_each_other():
    edges, _ = import_graph()
    sideways = sorted(f"{m} -> {t}" for m, targets in edges.items() for t in targets
                      if layer_of(t) == layer_of(m) and _top(t) != _top(m) and layer_of(t) > 0)
    assert not sideways, sideways


def test_runfolder_imports_no_stage():
    edges, _ = import_graph()
    below = [t for t in edges["posturescreen.runfolder"]
             if layer_of(t) >= layer_of("posturescreen.runfolder")]
    assert not below, below


def test_statistics_know_nothing_of_the_config():
    edges, _ = import_graph()
    found = sorted(f"{m} -> {t}" for m, targets in edges.items() for t in targets
                   if _top(m) == "stats" and _top(t) == "config")
    assert not found, found


def test_stages_import_the_pipeline_never():
    edges, _ = import_graph()
    importers = {m for m, targets in edges.items() if "posturescreen.pipeline" in targets}
    assert all(m.startswith("posturescreen.cli") or m == "posturescreen.demo"
               for m in importers), importers


# the model kinds' registry (models/kinds) answers what a kind does; the config declares the
# kinds' names and which fields each takes
KIND_SWITCH = re.compile(r"\bkind\s*(==|!=|in\b|not\s+in\b)")
KIND_HOMES = ("models/kinds/", "config/")


def kind_switches(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if KIND_SWITCH.search(line)]


def test_kind_switch_finder_finds_one():
    assert kind_switches('x = 1\nif model.kind == "fusion":\n') == ['if model.kind == "fusion":']
    assert kind_switches("if kind in (1, 2):\nkind = 3\n") == ["if kind in (1, 2):"]


def test_no_kind_switch_outside_the_kinds_registry():
    found = []
    for path in [*SRC.rglob("*.py"), *SRC.rglob("*.j2")]:
        rel = path.relative_to(SRC).as_posix()
        if not rel.startswith(KIND_HOMES):
            found += [f"{rel}: {line}" for line in kind_switches(path.read_text())]
    assert not found, found


def positional_overflow(tree: ast.AST) -> list[str]:
    """Public functions with more than three parameters that take more than three of them
    by position (the rest belong after a `*`)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and not node.name.startswith("_"):
            a = node.args
            positional = [x.arg for x in a.posonlyargs + a.args if x.arg not in ("self", "cls")]
            if len(positional) + len(a.kwonlyargs) > 3 and len(positional) > 3:
                out.append(f"{node.name}({', '.join(positional)})")
    return out


def test_positional_overflow_finder():
    tree = ast.parse("def f(a, b, c, d): pass\ndef g(a, b, *, c, d): pass\n"
                     "def _h(a, b, c, d): pass\nclass K:\n    def m(self, a, b, c): pass\n")
    assert positional_overflow(tree) == ["f(a, b, c, d)"]


def test_public_functions_take_at_most_three_positional_parameters():
    found = [f"{p.relative_to(SRC)}: {f}" for p in sorted(SRC.rglob("*.py"))
             for f in positional_overflow(ast.parse(p.read_text()))]
    assert not found, found


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: p.name)
def test_modules_are_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(SRC)}: {n} lines"
