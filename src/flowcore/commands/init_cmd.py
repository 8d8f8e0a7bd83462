"""``flow init``: adopt an existing project, by recording its build kit.

``[tool.flow] buildkit = "KIT"`` goes into the directory's ``pyproject.toml`` (comments and
formatting kept), or into a new ``flow.toml`` when there is no ``pyproject.toml``. A directory
inside a project that already names its kit is refused, and so is one the kit finds no project
in: a kit names the files it recognises a project by (``project_files`` in its
``flow_kit_info``; a kit that names none takes any folder). Without ``-k``, the kit is the one
installed kit that takes the folder. See docs/create.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from flowcore._base.errors import FlowError, UsageError
from flowcore.plugins.kit_info import accepts, declared_files, files_text

if TYPE_CHECKING:
    from flowcore.cli.app import Flow


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
    given = kit or flow.options.build_kit
    installed = flow.config.global_config.installed_kits
    if given or len(installed) < 2:
        kit = choose_kit(flow, given)
        files = project_files(flow, kit)
        if not accepts(files, here):
            raise UsageError(
                f"{here} is not a project build kit {kit} takes: it looks for "
                f"{files_text(files)}, and none is here",
                f"Run flow init in the project's root folder, or create a project: "
                f"flow create NAME -k {kit}")
    else:
        found = {k: project_files(flow, k) for k in installed}
        fits = [k for k in installed if accepts(found[k], here)]
        if not fits:
            looks = "; ".join(f"{k} looks for {files_text(found[k])}" for k in installed)
            raise UsageError(f"{here} is not a project any installed build kit takes ({looks})",
                             "Run flow init in the project's root folder, or create a "
                             "project: flow create NAME")
        kit = fits[0] if len(fits) == 1 else choose_kit(flow, None, fits)
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


def project_files(flow: Flow, kit: str) -> list[str] | None:
    """The files build kit ``kit`` recognises a project folder by (``project_files`` of its
    ``flow_kit_info``, from its cached command manifest), or ``None``: it takes any folder."""
    from flowcore.cli.app import Flow
    from flowcore.config import RunOptions
    from flowcore.registry.command_registry import CommandRegistry

    options = RunOptions(global_scope=True, build_kit=kit, check_latest=False,
                         root=flow.options.root, config=flow.options.config)
    try:
        info = CommandRegistry(Flow(options, cwd=flow.cwd)).manifest().kit
    except FlowError:
        return None
    return declared_files(info)


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
