"""``flow trust``: let a project run its own code (its ``.flow/env``, plugins, package source).

See ``flowcore.config.trust`` for what trust covers and why; docs/configuration.md#trust for users.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from flowcore._base.errors import UsageError

if TYPE_CHECKING:
    from flowcore.cli.app import Flow
    from flowcore.config import ProjectConfig


def _project_of(flow: Flow, directory: str | None) -> tuple[str, ProjectConfig | None]:
    """The project root to trust, and its config (if it has one).

    Without ``DIR``: the project this run found (``--root``/``--config`` respected). With it:
    the project found walking up from ``DIR``. A folder with a ``.flow/env`` but no flow config
    can be trusted too (the hand-over needs only the environment).
    """
    from flowcore.cli.local_handover import nearest_env_root
    from flowcore.config import find_project

    project = flow.config.project if directory is None else find_project(directory)
    if project is not None:
        return str(project.root), project
    start = str(flow.cwd) if directory is None else directory
    root = nearest_env_root(start)
    if root is None:
        raise UsageError(f"no flow project at or above {os.path.abspath(start)}",
                         "Run flow trust inside a project, or pass its folder: flow trust DIR")
    return root, None


def _what_it_runs(root: str, project: ProjectConfig | None) -> str:
    from flowcore.config import trust

    asked = trust.requests(project) if project is not None else ["its .flow/env"]
    return "; ".join(asked) if asked else "nothing yet"


@click.command(name="trust")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--revoke", is_flag=True, help="Stop trusting the project.")
@click.option("--list", "list_", is_flag=True, help="List the projects you trust (or declined).")
@click.pass_obj
def trust(flow: Flow, directory: str | None, revoke: bool, list_: bool) -> None:
    """Trust this project: use its .flow/env, plugins and package source.

    flow runs nothing a project ships until you trust it. Trust is recorded with the project's
    config and interpreter as they are now; when a change (a git pull) alters them, flow asks
    again.
    """
    from flowcore._base.printable import printable_line as one_line
    from flowcore.config import trust as trust_store

    if list_:
        if revoke or directory:
            raise UsageError("--list takes no folder and no --revoke", "Run flow trust --list")
        records = trust_store.listing()
        if not records:
            click.echo("No trusted projects.")
        for root in records:
            status, _ = trust_store.state(root)
            shown = {trust_store.TRUSTED: "trusted", trust_store.DENIED: "declined",
                     trust_store.CHANGED: "changed since trusted"}.get(status, status)
            click.echo(one_line(f"{root}  [{shown}]"))
        return
    root, project = _project_of(flow, directory)
    extra = [str(project.file)] if project is not None else []
    if revoke:
        if trust_store.revoke(root):
            click.echo(one_line(f"No longer trusted: {root}"))
        else:
            click.echo(one_line(f"{root} was not trusted; nothing changed."))
        return
    status, changed = trust_store.state(root, extra)
    trust_store.record(root, extra=extra)
    was = f" (changed since last time: {', '.join(changed)})" if status == trust_store.CHANGED else ""
    click.echo(one_line(f"Trusted {root}{was}: flow now uses {_what_it_runs(root, project)}."))
    problem = trust_store.env_problem(root) if os.path.isdir(trust_store.env_dir(root)) else None
    if problem is not None:
        click.echo(one_line(f"flow: warning: its .flow/env still will not run: {problem}. "
                            f"Delete it and let flow recreate it: flow plugin add ..."), err=True)
