"""Kits and plugins use flowcore's public API only (``flowcore.api.__all__``), and their tests
the testing API besides (``flowcore.testing.__all__``).

Every ``.py`` under kits/ and plugins/ is parsed, and each import of flowcore is checked: ``from
flowcore.api import X`` and ``from flowcore import X`` for a public X, ``import flowcore`` /
``import flowcore.api`` with only public attributes used. Their tests (``tests`` folders) may
also use ``flowcore.testing`` the same way: a third-party author has nothing else, so neither do
this repository's kits and plugins. Anything else (``flowcore.plugins.context``,
``flowcore._base.fileio``, ``ctx.obj`` reaching the core instance aside) fails with the file,
line and the fix.
"""

from __future__ import annotations

import ast
from pathlib import Path

from flowcore import api, testing

REPO = Path(__file__).resolve().parent.parent
PUBLIC = frozenset(api.__all__)
TESTING = frozenset(testing.__all__)
FIX = ("use a name from flowcore.api, or make it public: add it to flowcore.api.__all__, "
       "tests/test_exported_members.py and docs/writing-plugins.md")
TESTS_FIX = ("use a name from flowcore.api or flowcore.testing (a fixture: flow_home, flow, "
             "make_project), or make it public in flowcore.testing.__all__ and "
             "tests/test_testing_api.py")


def private_imports(source: str, filename: str = "<source>", *, tests: bool = False) -> list[str]:
    """``"<file>:<line> <what>"`` for every use of flowcore outside its public API (and, with
    ``tests``, outside the testing API)."""
    tree = ast.parse(source, filename)
    problems: list[str] = []
    modules: set[str] = set()  # local names bound to flowcore or flowcore.api
    testing_modules: set[str] = set()  # local names bound to flowcore.testing
    allowed = ("flowcore", "flowcore.api", "flowcore.testing") if tests else ("flowcore", "flowcore.api")

    def bad(node: ast.AST, what: str) -> None:
        problems.append(f"{filename}:{getattr(node, 'lineno', '?')} {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "flowcore":
                    continue
                if alias.name not in allowed:
                    bad(node, f"imports {alias.name}")
                elif alias.name == "flowcore.testing" and alias.asname:
                    testing_modules.add(alias.asname)
                    continue
                modules.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "flowcore":
                continue
            if node.module not in allowed:
                bad(node, f"imports from {node.module}")
                continue
            for alias in node.names:
                if alias.name == "api" and node.module == "flowcore":
                    modules.add(alias.asname or "api")
                elif alias.name == "testing" and node.module == "flowcore" and tests:
                    testing_modules.add(alias.asname or "testing")
                elif node.module == "flowcore.testing":
                    if alias.name not in TESTING:
                        bad(node, f"imports {node.module}.{alias.name}")
                elif alias.name not in PUBLIC:
                    bad(node, f"imports {node.module}.{alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
                node.value.id in testing_modules):
            if node.attr not in TESTING:
                bad(node, f"uses {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
                node.value.id in modules):
            if node.attr not in PUBLIC and node.attr not in ("api", "testing" if tests else "api"):
                bad(node, f"uses {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and (
                isinstance(node.value.value, ast.Name) and node.value.value.id in modules
                and node.value.attr == "api" and node.attr not in PUBLIC):
            bad(node, f"uses {node.value.value.id}.api.{node.attr}")
        elif tests and isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and (
                isinstance(node.value.value, ast.Name) and node.value.value.id in modules
                and node.value.attr == "testing" and node.attr not in TESTING):
            bad(node, f"uses {node.value.value.id}.testing.{node.attr}")
    return problems


def sources(tests: bool = False) -> list[Path]:
    """The kits' and plugins' code, or (``tests``) their tests: every file under a ``tests``
    folder (support modules and conftest included; node_modules of the JS tests aside)."""
    files = []
    for top in ("kits", "plugins"):
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).parts
            if "__pycache__" in rel or "node_modules" in rel or ("tests" in rel) != tests:
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


def test_kit_and_plugin_tests_import_only_the_public_and_testing_apis():
    files = sources(tests=True)
    folders = {path.relative_to(REPO).parts[:2] for path in files}
    assert {("kits", "flow-kit-python"), ("kits", "flow-kit-cloudbuild"),
            ("plugins", "flow-plugin-env"), ("plugins", "flow-plugin-pyclean")} <= folders
    problems = []
    for path in files:
        problems += private_imports(path.read_text(encoding="utf-8"),
                                    str(path.relative_to(REPO)), tests=True)
    assert problems == [], (f"private flowcore names used in tests ({TESTS_FIX}):\n"
                            + "\n".join(problems))


def test_tests_may_use_the_testing_api_and_nothing_more():
    source = """
import flowcore.testing
import flowcore.testing as ft
from flowcore import testing
from flowcore.testing import FlowRunner, Result, plugin
from flowcore.api import UsageError
from flowcore.cli.app import Flow
print(flowcore.testing.make_project, ft.Result, testing.SetupError, testing._last_line,
      flowcore.testing.FlowRunner, ft.plugin)
"""
    assert private_imports(source, tests=True) == [
        "<source>:5 imports flowcore.testing.plugin",
        "<source>:7 imports from flowcore.cli.app",
        "<source>:8 uses testing._last_line",
        "<source>:9 uses ft.plugin",
    ]
    assert private_imports("from flowcore.testing import FlowRunner\n") == [
        "<source>:1 imports from flowcore.testing"]


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
