"""The cloud-build kit's hooks: what it is, the hooks it declares for its plugins, its commands
(``publish``, ``promote``, ``releases``, ``verify``, ``dev``, ``cloudbuild-server``), and its
create templates.

This module is what flow imports to list or run the kit's commands, so it imports click and
the command's option definitions only; ``flow publish`` imports the rest (socketio included)
when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flowcore import hookimpl

if TYPE_CHECKING:
    from flowcore.api import HookSpecs

FLOW_API = ">=1"
KIT_NAME = "flow-kit-cloudbuild"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

#: name -> one-line description; each is a copier template under ``templates/<name>``.
TEMPLATES = {
    "static-site": "Static web site built with npm (no dependencies; node build.js -> dist/)",
    "python-package": "Python package built with hatchling (wheel and sdist)",
}


@hookimpl
def flow_addhooks(hooks: HookSpecs) -> None:
    """Declare the kit's own hooks (``hookspecs``), before its plugins are registered, so that
    flow validates them against these specs; they exist only in runs where this kit loads."""
    from flow_kit_cloudbuild import hookspecs

    hooks.add(hookspecs)


@hookimpl
def flow_kit_info(context: Any) -> dict[str, Any]:
    from flow_kit_cloudbuild.client.settings import CONFIG_SCHEMA

    return {
        "short_name": "cloudbuild",
        "description": "Build and publish projects on a flow cloud build server",
        "config_schema": dict(CONFIG_SCHEMA),  # declared beside the reader: client/settings.py
        # what flow publish reads a project's name and version from (client/project.py)
        "project_files": ["package.json", "pyproject.toml"],
    }


@click.command(
    "cloudbuild-server",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def cloudbuild_server(ctx: click.Context) -> None:
    """Run the cloud build server (same options as flow-cloudbuild-server; --help lists them).

    The kit is installed into flow's own environment, whose bin/ is not on PATH; this command
    starts the server from there without the user having to find it.
    """
    from flow_kit_cloudbuild.server.cli import serve

    serve.main(args=ctx.args, prog_name="flow cloudbuild-server", standalone_mode=False)


@hookimpl
def flow_register_commands(registry: Any) -> None:
    from flow_kit_cloudbuild.client.command import promote, publish, releases, verify
    from flow_kit_cloudbuild.client.dev import dev

    registry.add(publish)
    registry.add(promote)
    registry.add(releases)
    registry.add(verify)
    registry.add(dev)
    registry.add(cloudbuild_server)


@hookimpl
def flow_create_templates(kit: str) -> list[dict[str, Any]]:
    if kit != KIT_NAME:
        return []
    return [
        {"name": name, "description": description, "source": str(TEMPLATES_DIR / name),
         "kit": KIT_NAME}
        for name, description in TEMPLATES.items()
    ]
