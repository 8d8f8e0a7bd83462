"""flow-plugin-pyclean: ``flow clean`` removes Python build and cache leftovers.

Kit-bound to ``flow-kit-python``: ``flow plugin add`` reads ``FLOW_BUILD_KITS`` at install time
and binds the plugin to that kit (declaring the kit if it is not installed yet).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from flowcore import hookimpl

FLOW_BUILD_KITS = ["flow-kit-python"]
FLOW_API = ">=1"

#: Removed where they are found directly under the root (or under ``src/``).
TOP_LEVEL = ("dist", "build")
#: Removed wherever they are found below the root.
ANYWHERE = ("__pycache__", ".pytest_cache")
#: Never descended into: other people's files, environments, version control.
SKIP = {".git", ".hg", ".svn", ".venv", "venv", ".tox", ".nox", "node_modules", ".flow"}


def find_leftovers(root: Path) -> list[Path]:
    """Paths under ``root`` that ``flow clean`` removes, sorted, none inside another."""
    found: list[Path] = []
    for base in (root, root / "src"):
        for name in TOP_LEVEL:
            if (base / name).is_dir():
                found.append(base / name)
        if base.is_dir():
            found += sorted(p for p in base.glob("*.egg-info") if p.is_dir())
    found += list(_walk_for(root, set(ANYWHERE), set(found)))
    return sorted(set(found))


def _walk_for(directory: Path, names: set[str], skip: set[Path]) -> Iterator[Path]:
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.is_dir() or entry.is_symlink() or entry in skip:
            continue
        if entry.name in names:
            yield entry
        elif entry.name not in SKIP and not (entry / "pyvenv.cfg").exists():
            yield from _walk_for(entry, names, skip)


#: Files that make a directory a Python project when flow found no [tool.flow] config.
PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg")


def _project_root(ctx: click.Context) -> Path:
    """The flow project's root; else the working directory if it is a Python project.

    Anywhere else (a home directory, /tmp) walking the whole tree would be slow and surprising.
    """
    from flowcore.api import UsageError, current

    try:
        root = current().project_root
    except LookupError:  # run without flow: only the working directory can say
        root = None
    if root is not None:
        return root
    cwd = Path.cwd()
    if any((cwd / marker).exists() for marker in PROJECT_MARKERS):
        return cwd
    raise UsageError(f"{cwd} is not a Python project (no {', '.join(PROJECT_MARKERS)})",
                     "Run flow clean in the project's root directory")


@click.command(name="clean")
@click.option("-n", "--dry-run", is_flag=True, help="Only list what would be removed.")
@click.pass_context
def clean(ctx: click.Context, dry_run: bool) -> None:
    """Remove dist/, build/, *.egg-info, __pycache__ and .pytest_cache under the project root."""
    root = _project_root(ctx)
    leftovers = find_leftovers(root)
    for path in leftovers:
        rel = f"{path.relative_to(root)}/"
        if dry_run:
            click.echo(f"would remove {rel}")
        else:
            shutil.rmtree(path)
    if not leftovers:
        click.echo("nothing to clean")
    elif not dry_run:
        click.echo(f"removed {len(leftovers)} path{'s' if len(leftovers) != 1 else ''}")


@hookimpl
def flow_register_commands(registry: Any) -> None:
    registry.add(clean)
