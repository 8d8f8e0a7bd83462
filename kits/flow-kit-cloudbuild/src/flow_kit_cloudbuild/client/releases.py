"""``flow promote TASK`` and ``flow releases [PROJECT]``: the project's stable URLs from the
command line (the server's release index, ``server/storage/releases.py``).

Why commands of their own and not ``flow publish`` options: a rollback builds nothing, and it
must be possible from any machine holding the token, without the project checked out
(``flow releases NAME`` then ``flow promote TASK``).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import click

from flow_kit_cloudbuild.client import http
from flow_kit_cloudbuild.client.errors import PublishUsageError
from flow_kit_cloudbuild.client.settings import Settings, resolve
from flowcore.api import current, printable_line


def _settings(server: str | None, token: str | None, connect_timeout: float | None) -> tuple[Settings, Any]:
    try:
        context = current()
    except LookupError:
        context = None
    return resolve(context, server=server, token=token, build_cmd=None, timeout=None, source=None,
                   branch=None, connect_timeout=connect_timeout), context


def promote(*, task: str, server: str | None, token: str | None, connect_timeout: float | None,
            json_mode: bool) -> None:
    """Point prod at ``task``; prints the prod URL last."""
    settings, _ = _settings(server, token, connect_timeout)
    answer = http.promote(settings.server, settings.token, task.strip(), settings.connect_timeout)
    if json_mode:
        click.echo(json.dumps(answer))
        return
    previous = answer.get("previous")
    click.echo(printable_line(f"{answer.get('project')}: prod is now task {answer.get('taskId')}"
                              + (f" (was {previous})" if previous else "")), err=True)
    click.echo(printable_line(str(answer.get("url") or "")))


def releases(*, project: str | None, server: str | None, token: str | None, connect_timeout: float | None,
             json_mode: bool) -> None:
    """The project's prod URL, branch URLs and release history, newest first."""
    settings, context = _settings(server, token, connect_timeout)
    if not project:
        from flow_kit_cloudbuild.client.project import read_project

        root = getattr(context, "project_root", None)
        if root is None:
            raise PublishUsageError("no project here to list releases of", "Pass the project name: flow releases NAME")
        project = read_project(root).name
    answer = http.releases(settings.server, settings.token, project, settings.connect_timeout)
    if json_mode:
        click.echo(json.dumps(answer))
        return
    prod = answer.get("prod")
    click.echo(printable_line(f"{answer.get('name')} ({answer.get('project')})"))
    click.echo(printable_line(f"  prod    {answer.get('url')}  -> task {prod or '(none)'}"))
    for branch, alias in (answer.get("branches") or {}).items():
        click.echo(printable_line(f"  {branch:<7} {alias.get('url')}  -> task {alias.get('taskId')}"))
    click.echo("history (newest first):")
    for entry in answer.get("history") or []:
        when = datetime.datetime.fromtimestamp(int(entry.get("at") or 0) / 1000).strftime("%Y-%m-%d %H:%M")
        what = entry.get("action")
        where = "prod" if entry.get("prod") else f"branch {entry.get('branch')}"
        current_mark = "*" if entry.get("taskId") == prod and entry.get("prod") else " "
        click.echo(printable_line(f" {current_mark}{when}  {entry.get('taskId')}  {entry.get('version')}  "
                                  f"{what} to {where}"))
