"""``flow trust``: let a project run its own code (its ``.flow/env``, plugins, package source).

See ``flowcore.trust`` for what trust covers and why; docs/configuration.md#trust for users.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from flowcore.errors import UsageError

if TYPE_CHECKING:
    from flowcore.app import Flow


def _root_of(flow: Flow, directory: str | None) -> tuple[str, list[str]]:
    """The project root to trust, and the config files it tracks beside its own.

    Without ``DIR``: the project this run found (``--root``/``--config`` respected). With it:
    the project found walking up from ``DIR``. A folder with a ``.flow/env`` but no flow config
    can be trusted too (the hand-over needs only the environment).
    """
    from flowcore.config import find_project

    if directory is None:
        project = flow.config.project
        start = flow.cwd_str
    else:
        project = find_project(directory)
        start = directory
    if project is not None:
        return project.root_dir, [project.filename]
    here = os.path.abspath(start)
    while True:
        if os.path.isdir(os.path.join(here, ".flow", "env")):
            return here, []
        parent = os.path.dirname(here)
        if parent == here:
            raise UsageError(f"no flow project at or above {os.path.abspath(start)}",
                             "Run flow trust inside a project, or pass its folder: flow trust DIR")
        here = parent


def _what_it_runs(root: str) -> str:
    from flowcore import trust
    from flowcore.config import find_project

    project = find_project(root=_as_path(root)) if _has_config(root) else None
    asked = trust.requests(project) if project is not None else (
        ["its .flow/env"] if os.path.isdir(trust.env_dir(root)) else [])
    return "; ".join(asked) if asked else "nothing yet"


def _has_config(root: str) -> bool:
    from flowcore import trust

    return any(os.path.isfile(os.path.join(root, n)) for n in trust.CONFIG_NAMES)


def _as_path(text: str):  # noqa: ANN202 - a pathlib.Path, imported lazily
    from pathlib import Path

    return Path(text)


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
    from flowcore import trust as trust_store
    from flowcore._printable import printable_line as one_line

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
    root, extra = _root_of(flow, directory)
    if revoke:
        if trust_store.revoke(root):
            click.echo(one_line(f"No longer trusted: {root}"))
        else:
            click.echo(one_line(f"{root} was not trusted; nothing changed."))
        return
    status, changed = trust_store.state(root, extra)
    trust_store.record(root, extra=extra)
    was = f" (changed since last time: {', '.join(changed)})" if status == trust_store.CHANGED else ""
    click.echo(one_line(f"Trusted {root}{was}: flow now uses {_what_it_runs(root)}."))
    problem = trust_store.env_problem(root) if os.path.isdir(trust_store.env_dir(root)) else None
    if problem is not None:
        click.echo(one_line(f"flow: warning: its .flow/env still will not run: {problem}. "
                            f"Delete it and let flow recreate it: flow plugin add ..."), err=True)
