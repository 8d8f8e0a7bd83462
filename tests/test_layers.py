"""The layer order of the core and of both kits, held against their source.

The order is written once, in pyproject.toml's ``[tool.flowcore.layers]``: for each package, its
parts from the bottom up. A module may import from its own layer and the layers below it, never
from one above, and no set of modules may import each other in a circle. Every import counts:
at module level, inside a function (deferred for start-up speed: deferring is fine, pointing
upward is not) and under ``if TYPE_CHECKING:`` (a type a lower layer names is a dependency on
the layer that defines it, run or not).

The graph is built from the source with ``ast`` (nothing is imported), so the test sees imports
that only run on some paths.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = {
    "flowcore": REPO / "src" / "flowcore",
    "flow_kit_cloudbuild": REPO / "kits" / "flow-kit-cloudbuild" / "src" / "flow_kit_cloudbuild",
    "flow_kit_python": REPO / "kits" / "flow-kit-python" / "src" / "flow_kit_python",
}


def declared_layers() -> dict[str, list[list[str]]]:
    """``{package: [[part, ...] per layer, bottom first]}`` from pyproject.toml."""
    table = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flowcore"]["layers"]
    return {package: [entry.split() for entry in layers] for package, layers in table.items()}


def modules_of(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (packages by ``__init__``)."""
    root = SOURCES[package]
    found = {}
    for path in sorted(root.rglob("*.py")):
        if "templates" in path.relative_to(root).parts:
            continue  # files a template renders into a new project, not modules of the package
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported_names(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every name ``module`` imports (``a.b`` for ``import a.b``, ``a.b.c`` for ``from a.b import
    c``), with its line, wherever the import statement is."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                yield f"{source}.{alias.name}", node.lineno


def import_graph(package: str) -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}`` within ``package``; ``from a import b`` counts as
    importing the module ``a.b`` where that is one, else ``a``."""
    modules = modules_of(package)
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for name, line in imported_names(module, path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.setdefault(name, line)
        graph[module] = edges
    return graph


def part_of(package: str, module: str) -> str:
    """The part of ``package`` holding ``module``: its first name below the package (a
    subpackage or a module), ``__init__`` for the package itself."""
    return module[len(package) + 1:].split(".")[0] if module != package else "__init__"


def layer_of(package: str, module: str, layers: list[list[str]]) -> int:
    """The index of the layer holding ``module``'s part of ``package``."""
    part = part_of(package, module)
    for index, parts in enumerate(layers):
        if part in parts:
            return index
    raise AssertionError(f"{module} is in no layer of [tool.flowcore.layers].{package}: add {part!r} to one")


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def upward_imports(top: str) -> list[str]:
    """Every import of ``top``'s modules that points up a declared order. An import is judged by
    the deepest declared package holding both ends (``flow_kit_cloudbuild.server`` for two
    server modules, ``flow_kit_cloudbuild`` for a server module importing the protocol); two
    modules in the same part of it are not ordered there."""
    declared = {name: layers for name, layers in declared_layers().items() if inside(name, top)}
    found = []
    for module, edges in sorted(import_graph(top).items()):
        for name in declared:
            if inside(module, name):
                layer_of(name, module, declared[name])  # every module is in a layer
        for target, line in sorted(edges.items()):
            common = max((n for n in declared if inside(module, n) and inside(target, n)), key=len)
            layers = declared[common]
            mine, theirs = layer_of(common, module, layers), layer_of(common, target, layers)
            if theirs > mine:
                found.append(f"{module} (line {line}) imports {target}: layer {' '.join(layers[mine])} "
                             f"of {common} may not import layer {' '.join(layers[theirs])}")
    return found


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("package", sorted(SOURCES))
def test_every_import_points_down_the_declared_layers(package: str) -> None:
    upward = upward_imports(package)
    assert not upward, "imports pointing up the layer order:\n" + "\n".join(upward)


@pytest.mark.parametrize("package", sorted(SOURCES))
def test_no_import_cycles(package: str) -> None:
    found = cycles(import_graph(package))
    assert not found, "modules importing each other in a circle:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checker_sees_deferred_and_type_checking_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph counts an import inside a function and one under TYPE_CHECKING, and finds a
    circle made only of them (so the two tests above can fail)."""
    pkg = tmp_path / "demo"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from demo.high import b\n")
    (pkg / "high.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from demo.low import a\n")
    monkeypatch.setitem(SOURCES, "demo", pkg)
    graph = import_graph("demo")
    assert graph["demo.low.a"] == {"demo.high": 2}
    assert graph["demo.high"] == {"demo.low.a": 3}
    assert cycles(graph) == [["demo.high", "demo.low.a"]]
    assert layer_of("demo", "demo.high", [["low"], ["high"]]) == 1
    monkeypatch.setattr(sys.modules[__name__], "declared_layers",
                        lambda: {"demo": [["low"], ["high", "__init__"]]})
    assert upward_imports("demo") == [
        "demo.low.a (line 2) imports demo.high: layer low of demo may not import layer high __init__"]
