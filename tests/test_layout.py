"""The package's layout, read from the source (nothing is imported): no import cycles, dependencies that
point one way (docs/architecture.md), a docstring on every module, no module far past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import directer

ROOT = Path(directer.__file__).parent

# What each part may import (besides itself): the layers of docs/architecture.md, read bottom-up.
ALLOWED = {
    "errors": set(),
    "results": {"errors"},
    "models": {"errors"},
    "methods": {"errors", "results"},
    "autospans": set(),
    "text": {"errors"},
    "config": {"errors", "methods"},
    "inputs": {"errors", "engine", "autospans", "text"},
    "progress": set(),
    "processes": {"errors"},
    "engine": {"errors", "results", "methods", "models"},
    "runner": {"errors", "results", "config", "methods", "engine", "text"},
    "api": {"errors", "results", "config", "inputs", "progress", "engine", "models", "autospans", "runner", "text"},
    "transformers_hook": {"errors", "results", "config", "engine", "models", "runner"},
    "view": {"results", "methods"},
    "serving": {"errors", "results", "config", "engine", "api", "runner", "text"},
    "evaluation": {"errors", "results", "config", "progress", "engine", "api", "autospans", "text"},
    "integrations": {"errors", "config", "methods", "api", "autospans", "processes"},
    "cli": {"errors", "results", "config", "inputs", "progress", "processes", "methods", "models", "api", "evaluation",
            "serving", "view", "integrations", "__init__"},
    "__init__": {"errors", "results", "config", "engine", "methods", "models", "api", "transformers_hook", "text"},
    "__main__": {"cli"},
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports, anywhere in its source (deferred imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                for candidate in (f"{target}.{alias.name}", target):
                    if candidate in MODULES:
                        found.add(candidate)
                        break
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULES)
    found.discard(name)
    # A package's __init__ re-exporting its own modules is not a dependency of the package on them.
    if path.name == "__init__.py":
        found = {m for m in found if not m.startswith(name + ".")}
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _part(name: str) -> str:
    parts = name.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_every_module_belongs_to_a_known_part():
    assert {_part(m) for m in MODULES} <= set(ALLOWED)


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_dependencies_point_one_way(name):
    part = _part(name)
    upward = sorted(t for t in GRAPH[name] if _part(t) != part and _part(t) not in ALLOWED[part])
    assert upward == [], f"{name} imports {upward}: {part} may import only {sorted(ALLOWED[part])}"


def test_engine_and_methods_never_import_the_front_ends():
    front = {"evaluation", "serving", "cli", "view", "api"}
    for name, targets in GRAPH.items():
        if _part(name) in ("engine", "methods"):
            assert not {_part(t) for t in targets} & front, name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_has_a_docstring_and_a_reasonable_length(name):
    source = MODULES[name].read_text(encoding="utf-8")
    assert ast.get_docstring(ast.parse(source)), f"{name} has no docstring saying what it is for"
    assert source.count("\n") <= 420, f"{name} has {source.count(chr(10))} lines: split it"
