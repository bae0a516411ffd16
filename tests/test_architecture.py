"""The layering of docs/architecture.md, checked on the source: no import cycle anywhere in `socratic/` (function-
level imports included), the registry at the ground floor, and a config layer that imports no method code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "socratic"
METHOD_PACKAGES = ("socratic.distillers", "socratic.multiteacher", "socratic.augment", "socratic.rl",
                   "socratic.data", "socratic.models", "socratic.engine", "socratic.search")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every socratic module that `path` imports, at any depth of the file (`from a import b` counts `a.b`
    when that is a module, else `a`)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _package_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between sub-packages (socratic.rl, socratic.engine, ...; top-level modules stand alone),
    without the edges of package `__init__` files, which only re-export."""
    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    init_files = {_module_name(p) for p in PACKAGE.rglob("__init__.py")}
    edges: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module in init_files:
            continue
        for target in targets:
            if package(target) != package(module):
                edges.setdefault(package(module), set()).add(package(target))
    return edges


def test_the_checker_finds_a_cycle_and_a_relative_import(tmp_path: Path) -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    graph = _graph()
    assert "socratic.registry" in graph["socratic.config.schema"]
    assert "socratic.models.features" in graph["socratic.models.resnet"]  # `from .features import ...`


def test_no_import_cycle_between_modules() -> None:
    assert _cycles(_graph()) == []


def test_no_import_cycle_between_packages() -> None:
    cycles = _cycles(_package_edges(_graph()))
    assert cycles == [], f"packages that import each other: {cycles}"


def test_the_registry_and_the_context_import_nothing_of_socratic() -> None:
    graph = _graph()
    assert graph["socratic.registry"] == set() and graph["socratic.context"] == set()


@pytest.mark.parametrize("module", ["socratic.config", "socratic.config.schema", "socratic.config.loader"])
def test_the_config_layer_imports_no_method_code(module: str) -> None:
    reached = _graph()[module]
    assert not [m for m in reached if m.startswith(METHOD_PACKAGES)], reached
