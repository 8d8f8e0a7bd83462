"""``flow plugin``: list, add and delete plugins.

Global scope (outside a project, or with ``-g``): kit-bound plugins join their kits' lists,
other plugins are general. Project scope: plugins go into the project's own flow environment and
its ``[tool.flow] plugins``.
"""

from __future__ import annotations

import json
from typing import Any

import click

from flowcore._base.errors import InstallError
from flowcore.cli.app import Flow
from flowcore.cli.completion_values import plugin_names
from flowcore.commands import AliasedGroup
from flowcore.commands._install_options import announce_source, install_options
from flowcore.registry.command_registry import of_run


@click.group(cls=AliasedGroup)
def plugin() -> None:
    """Install, remove and list plugins."""


@plugin.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_obj
def list_(flow: Flow, as_json: bool) -> None:
    """List the plugins of this scope, each with its version."""
    config = flow.config
    glob = flow.packages.installed_versions("global")
    local = flow.packages.installed_versions("project") if config.scope == "project" else {}
    kinds = {"kit": f"kit {config.active_kit}", "project": "project", "general": "general"}
    rows: list[dict[str, str | None]] = [
        {"name": ref.name, "kind": kinds[ref.kind],
         "version": (local if ref.kind == "project" else glob).get(ref.name)}
        for ref in config.plugins_to_load]
    if as_json:
        click.echo(json.dumps({"scope": config.scope, "plugins": rows}, indent=2))
        return
    if not rows:
        click.echo("no plugins. Add one with: flow plugin add NAME")
    # names come from config files, versions from installed metadata: cells without controls
    from flowcore._base.printable import printable_line

    cells = [[printable_line(str(r[k] or "")) for k in ("name", "version", "kind")] for r in rows]
    width = max((len(name) for name, _, _ in cells), default=0)
    for name, version, kind in cells:
        click.echo(f"{name:<{width}}  {version or '(not installed)'}  ({kind})")


@plugin.command()
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@install_options
@click.pass_obj
def add(flow: Flow, specs: tuple[str, ...], find_links: tuple[str, ...], no_index: bool) -> None:
    """Install plugins: a name, name with version, directory or wheel file."""
    config = flow.config
    config.require_trust("install plugins into it")  # before naming the project's package source
    announce_source(flow, no_index)
    installed_kits = set(config.global_config.installed_kits)
    for r in flow.packages.add_plugins(specs, find_links, no_index):
        if config.scope == "project" and config.project is not None:
            where = f"into project {config.project.root}"
        elif r.build_kits:
            kits = ", ".join(k if k in installed_kits else f"{k} (declared, not installed)"
                             for k in r.build_kits)
            where = f"for build kit{'s' if len(r.build_kits) > 1 else ''} {kits}"
        else:
            where = "as a general plugin"
        from flowcore._base.printable import printable_line  # kit names are the plugin's FLOW_BUILD_KITS

        click.echo(printable_line(f"installed plugin {r.name} {r.version} {where}"))
    of_run().refresh()  # the next command finds the command manifest valid


@plugin.command()
@click.argument("names", nargs=-1, metavar="[NAME...]", shell_complete=plugin_names)
@click.pass_obj
def delete(flow: Flow, names: tuple[str, ...]) -> None:
    """Uninstall plugins and remove them from every kit (choose from a list without NAME)."""
    config = flow.config
    if names and config.scope == "project" and config.project is not None:
        _refuse_global_plugins(config, names)
    if not names:
        known = config.configured_plugins
        if not known:
            raise InstallError("no plugins are installed", "Nothing to delete")
        from flowcore._base.prompts import choose

        names = tuple(choose("Delete which plugins?", known, multiple=True, argument="NAME",
                             command="flow plugin delete"))
    for name in flow.packages.delete_plugins(names):
        click.echo(f"deleted plugin {name}")
    of_run().refresh()  # the next command finds the command manifest valid


def _refuse_global_plugins(config: Any, names: tuple[str, ...]) -> None:
    """Inside a project, a plugin that only the global config lists (which ``plugin list``
    shows there, as a general plugin) is named as such, with the command that deletes it."""
    from flowcore.config.environment import canonical_name

    project = {canonical_name(p) for p in config.project.plugins}
    glob = {canonical_name(p) for p in config.global_config.all_plugins}
    for name in names:
        n = canonical_name(name)
        if n not in project and n in glob:
            raise InstallError(
                f"plugin '{name}' is not a plugin of project {config.project.root}: it is "
                "installed globally (plugin list shows the global general plugins here too)",
                f"Delete it from the global scope: flow -g plugin delete {name}")
