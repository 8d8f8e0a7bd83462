"""``flow init``: adopt an existing project, by recording its build kit.

``[tool.flow] buildkit = "KIT"`` goes into the directory's ``pyproject.toml`` (comments and
formatting kept), or into a new ``flow.toml`` when there is no ``pyproject.toml``. A directory
inside a project that already names its kit is refused. See docs/create.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from flowcore.errors import UsageError

if TYPE_CHECKING:
    from flowcore.app import Flow


@click.command(name="init")
@click.option("-k", "--build-kit", "kit", metavar="NAME",
              help="Build kit of the project (default: the only installed kit, else a choice).")
@click.pass_obj
def init(flow: Flow, kit: str | None) -> None:
    """Make the current directory a flow project: record its build kit."""
    from flowcore.commands.create_cmd import choose_kit
    from flowcore.config import FLOW_TOML, PYPROJECT, ProjectConfig, add_project_key, edit_project

    here = flow.cwd.absolute()
    project = flow.config.project
    if project is not None and project.buildkit:
        where = "" if project.root == here else f" inside project {project.root}"
        raise UsageError(
            f"{here}{where} already has a build kit: {project.buildkit} (in {project.file})",
            "To change it, run flow buildkit switch NAME in the project",
        )
    kit = choose_kit(flow, kit or flow.options.build_kit)
    if project is not None and project.root == here:
        target = project                       # a flow table without a kit: add the kit to it
    elif (here / PYPROJECT).is_file():
        target = ProjectConfig(here, here / PYPROJECT, {})
    else:
        target = None
    if target is not None:
        edit_project(target, lambda table: add_project_key(table, "buildkit", kit))
        recorded = target.file.name
    else:
        _create_exclusively(here / FLOW_TOML, f'[tool.flow]\nbuildkit = "{kit}"\n')
        recorded = FLOW_TOML
    click.echo(f"Initialized flow project {here}: build kit {kit} recorded in {recorded}.")
    click.echo("Next: flow --help")


def _create_exclusively(path: Path, text: str) -> None:
    """Write a new file whole (a temporary file linked into place): never half a file, and never
    over a file that appeared meanwhile."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise UsageError(f"{path} appeared while flow init ran",
                             "Run flow init again") from exc
    finally:
        tmp.unlink(missing_ok=True)
