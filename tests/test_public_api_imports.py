"""Kits and plugins use flowcore's public API only (``flowcore.api.__all__``).

Every ``.py`` under kits/ and plugins/ (their tests excepted: tests may build core objects to
drive a command) is parsed, and each import of flowcore is checked: ``from flowcore.api import
X`` and ``from flowcore import X`` for a public X, ``import flowcore`` / ``import flowcore.api``
with only public attributes used. Anything else (``flowcore.plugins.context``, ``flowcore._base.fileio``,
``ctx.obj`` reaching the core instance aside) fails with the file, line and the fix.
"""

from __future__ import annotations

import ast
from pathlib import Path

from flowcore import api

REPO = Path(__file__).resolve().parent.parent
PUBLIC = frozenset(api.__all__)
FIX = ("use a name from flowcore.api, or make it public: add it to flowcore.api.__all__, "
       "tests/test_exported_members.py and docs/writing-plugins.md")


def private_imports(source: str, filename: str = "<source>") -> list[str]:
    """``"<file>:<line> <what>"`` for every use of flowcore outside its public API."""
    tree = ast.parse(source, filename)
    problems: list[str] = []
    modules: set[str] = set()  # local names bound to flowcore or flowcore.api

    def bad(node: ast.AST, what: str) -> None:
        problems.append(f"{filename}:{getattr(node, 'lineno', '?')} {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "flowcore":
                    continue
                if alias.name not in ("flowcore", "flowcore.api"):
                    bad(node, f"imports {alias.name}")
                modules.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "flowcore":
                continue
            if node.module not in ("flowcore", "flowcore.api"):
                bad(node, f"imports from {node.module}")
                continue
            for alias in node.names:
                if alias.name == "api" and node.module == "flowcore":
                    modules.add(alias.asname or "api")
                elif alias.name not in PUBLIC:
                    bad(node, f"imports {node.module}.{alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
                node.value.id in modules):
            if node.attr not in PUBLIC and node.attr != "api":
                bad(node, f"uses {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and (
                isinstance(node.value.value, ast.Name) and node.value.value.id in modules
                and node.value.attr == "api" and node.attr not in PUBLIC):
            bad(node, f"uses {node.value.value.id}.api.{node.attr}")
    return problems


def sources() -> list[Path]:
    files = []
    for top in ("kits", "plugins"):
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).parts
            if "tests" in rel or "__pycache__" in rel:
                continue
            files.append(path)
    return files


def test_kits_and_plugins_import_only_the_public_api():
    files = sources()
    assert len(files) > 20  # the scan sees the kits' and plugins' code
    problems = []
    for path in files:
        problems += private_imports(path.read_text(encoding="utf-8"),
                                    str(path.relative_to(REPO)))
    assert problems == [], f"private flowcore names used ({FIX}):\n" + "\n".join(problems)


def test_the_scan_catches_every_way_of_reaching_a_private_name():
    source = """
import flowcore
import flowcore.plugins.context
import flowcore.api as fapi
from flowcore import hookimpl, config
from flowcore.api import current, Flow
from flowcore._base.fileio import atomic_write_bytes
from flowcore import api
print(flowcore.__version__, flowcore.config, fapi.current, api.Flow, flowcore.api.hookimpl)

def later():
    from flowcore.config.environment import uv_binary
"""
    assert private_imports(source) == [
        "<source>:3 imports flowcore.plugins.context",
        "<source>:5 imports flowcore.config",
        "<source>:6 imports flowcore.api.Flow",
        "<source>:7 imports from flowcore._base.fileio",
        "<source>:12 imports from flowcore.config.environment",
        "<source>:9 uses flowcore.config",
        "<source>:9 uses api.Flow",
    ]
