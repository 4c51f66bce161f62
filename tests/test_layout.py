"""The package layout: imports flow one way (lower layers never import higher ones), no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import revelio

PACKAGE = Path(__file__).resolve().parent.parent / "revelio"
# Lowest first. A module may import its own layer or lower ones, never a higher one, also lazily.
LAYERS = [
    ["revelio", "revelio.errors", "revelio.hook_points", "revelio.layout", "revelio.config", "revelio.grid", "revelio.bundled", "revelio.storage", "revelio.plots", "revelio.formats"],
    ["revelio.data", "revelio.artifact"],
    ["revelio.models", "revelio.cache", "revelio.interop"],
    ["revelio.activations", "revelio.sae"],
    ["revelio.analysis"],
    ["revelio.probes", "revelio.steering"],
    ["revelio.steps"],
    ["revelio.release"],
    ["revelio.app"],
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """revelio modules imported by a file, type-only (TYPE_CHECKING) imports included: a cycle of
    annotations is still a cycle for a reader."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()

    def visit(nodes: list[ast.stmt], nested: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.startswith("revelio"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("revelio"):
                names.add(node.module)
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], (ast.stmt, ast.ExceptHandler)):
                    is_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    if not (top_level_only and (nested or is_function)):
                        visit([n for n in inner if isinstance(n, ast.stmt)] + [s for h in inner if isinstance(h, ast.ExceptHandler) for s in h.body],
                              nested or is_function)

    visit(tree.body, False)
    if not top_level_only:  # `revelio.load_release(...)` and friends reach the module behind the name
        names.update(
            revelio._EXPORTS[node.attr] for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "revelio"
            and node.attr in revelio._EXPORTS
        )
    return names


def _layer(module: str) -> int:
    best = None
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{module} is in no layer of tests/test_layout.py"
    return best[0]


def test_no_module_imports_a_higher_layer():
    wrong = []
    for module, path in _modules().items():
        for imported in _imports(path, top_level_only=False):
            if _layer(imported) > _layer(module):
                wrong.append(f"{module} (layer {_layer(module)}) imports {imported} (layer {_layer(imported)})")
    assert not wrong, "\n".join(wrong)


def test_imports_have_no_cycles():
    modules = _modules()
    graph = {m: {i for i in _imports(p, top_level_only=False) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, module, imported]))
            if imported not in state:
                visit(imported, [*stack, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
