"""flow-kit-python: the build kit for Python projects.

Hooks: ``flow_kit_info`` (short name ``python``, its ``[tool.flow.python]`` keys),
``flow_register_commands`` (``flow build``, ``flow test``), ``flow_create_templates``
(``library`` and ``cli``, copier templates shipped inside this package) and ``flow_addhooks``,
which declares the kit's own hooks (``flow_kit_python.hookspecs``, docs/hooks-python.md) for its
kit-bound plugins. The commands live in
``flow_kit_python.commands`` and are imported only when flow registers or runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowcore import hookimpl

if TYPE_CHECKING:
    from flowcore.api import HookSpecs

FLOW_API = ">=1"
KIT = "flow-kit-python"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

#: ``[tool.flow.python]`` keys (also ``kitConfig.python`` in $FLOW_HOME/config.json).
CONFIG_SCHEMA = {
    "build-isolation": 'true, false or "auto" (default): isolated builds, except offline '
                       "(UV_OFFLINE, PIP_NO_INDEX or FLOW_OFFLINE set)",
    "build-tool": '"auto" (default: uv build, else python -m build), "uv" or "build"',
    "dist-dir": 'where flow build writes the sdist and wheel (default "dist")',
    "test-env": '"auto" (default: the project\'s .venv if it has one, else .flow/test-env), '
                '".venv" or "flow"',
    "test-args": "extra arguments always passed to pytest (a list of strings)",
    "test-groups": 'the dependency groups (PEP 735 or Poetry) flow test installs into '
                   '.flow/test-env (default ["test", "dev"], each one the project has)',
}

TEMPLATES = (
    ("library", "A Python library: src layout, pyproject (hatchling), pytest tests, README"),
    ("cli", "A command-line application (click): src layout, console script, tests, README"),
)


@hookimpl
def flow_kit_info() -> dict[str, Any]:
    return {
        "short_name": "python",
        "description": "Python projects: create, build (sdist + wheel), test (pytest)",
        "config_schema": CONFIG_SCHEMA,
        # the folders flow init adopts with this kit (commands.PROJECT_FILES)
        "project_files": ["pyproject.toml", "setup.py", "setup.cfg"],
    }


@hookimpl
def flow_register_commands(registry: Any) -> None:
    from flow_kit_python.commands import build, test

    registry.add(build)
    registry.add(test)


@hookimpl
def flow_create_templates(kit: str) -> list[dict[str, str]]:
    if kit != KIT:
        return []
    return [{"name": name, "description": description, "source": str(TEMPLATES_DIR / name),
             "kit": KIT} for name, description in TEMPLATES]


@hookimpl
def flow_addhooks(hooks: HookSpecs) -> None:
    """Declare the kit's hooks; flow calls this when the kit loads, before its plugins, so that
    they are checked against these specs (and the hooks exist only when this kit is loaded)."""
    from flow_kit_python import hookspecs

    hooks.add(hookspecs)
