"""``flow buildkit``: list, add, delete and switch build kits.

Kits always live in the global flow environment. ``switch`` sets the global active kit, or,
inside a project (without ``-g``), the project's ``[tool.flow] buildkit``.
"""

from __future__ import annotations

import json
from typing import TypedDict

import click

from flowcore._base.errors import InstallError, UsageError
from flowcore.cli.app import Flow
from flowcore.cli.completion_values import kit_names
from flowcore.commands import AliasedGroup
from flowcore.commands._install_options import announce_source, install_options
from flowcore.registry.command_registry import of_run


class _PluginRow(TypedDict):
    name: str
    version: str | None


class _KitRow(TypedDict):
    """One kit of ``flow buildkit list`` (and of its ``--json`` output)."""

    name: str
    installed: bool
    active: bool
    version: str | None
    plugins: list[_PluginRow]


@click.group(cls=AliasedGroup)
def buildkit() -> None:
    """Install, remove, list and switch build kits."""


@buildkit.command(name="list")
@click.option("-a", "--all", "show_plugins", is_flag=True, help="Also list each kit's plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_obj
def list_(flow: Flow, show_plugins: bool, as_json: bool) -> None:
    """List installed and declared kits; the active one is marked with '*'."""
    config = flow.config
    versions = flow.packages.installed_versions("global")
    active = config.active_kit
    kits: list[_KitRow] = [
        {"name": k.name, "installed": k.installed, "active": k.name == active,
         "version": versions.get(k.name) if k.installed else None,
         "plugins": [{"name": p, "version": versions.get(p)} for p in k.plugins]}
        for k in config.global_config.kits]
    if as_json:
        click.echo(json.dumps({"active": active, "kits": kits}, indent=2))
        return
    if not kits:
        click.echo("no build kits. Add one with: flow buildkit add PATH-OR-NAME")
    # names come from the config file, versions from installed metadata: no controls
    from flowcore._base.printable import printable_line as cell

    for kit in kits:
        mark = "*" if kit["active"] else " "
        state = (cell(kit["version"] or "") or "(missing from the environment: run flow doctor)") \
            if kit["installed"] else "(declared, not installed)"
        click.echo(f"{mark} {cell(kit['name'])} {state}")
        if show_plugins:
            for p in kit["plugins"]:
                click.echo(f"    {cell(p['name'])} {cell(p['version'] or '') or '(not installed)'}")
    if active and not any(k["active"] for k in kits):
        from flowcore.cli.hints import install_kit_fix

        click.echo(cell(f"active build kit {active} is not installed. {install_kit_fix(active)}"))


@buildkit.command()
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@install_options
@click.pass_obj
def add(flow: Flow, specs: tuple[str, ...], find_links: tuple[str, ...], no_index: bool) -> None:
    """Install build kits: a name, name with version, directory or wheel file."""
    before = flow.config.global_config.active_kit
    announce_source(flow, no_index)
    for r in flow.packages.add_kits(specs, find_links, no_index):
        click.echo(f"installed build kit {r.name} {r.version}")
    now = flow.config.global_config.active_kit  # the config's edits refresh its view
    if now != before:
        click.echo(f"active build kit: {now}")
    of_run().refresh()  # the next command finds the command manifest valid


def _installed(flow: Flow) -> list[str]:
    return flow.config.global_config.installed_kits


@buildkit.command()
@click.argument("names", nargs=-1, metavar="[NAME...]", shell_complete=kit_names)
@click.pass_obj
def delete(flow: Flow, names: tuple[str, ...]) -> None:
    """Uninstall build kits (choose from a list when no NAME is given)."""
    if not names:
        installed = _installed(flow)
        if not installed:
            raise InstallError("no build kits are installed", "Nothing to delete")
        from flowcore._base.prompts import choose

        names = tuple(choose("Delete which build kits?", installed, multiple=True,
                             argument="NAME", command="flow buildkit delete"))
    for name in flow.packages.delete_kits(names):
        click.echo(f"deleted build kit {name}")
    of_run().refresh()  # the next command finds the command manifest valid


@buildkit.command()
@click.argument("name", required=False, shell_complete=kit_names)
@click.pass_obj
def switch(flow: Flow, name: str | None) -> None:
    """Make NAME the active build kit (choose from a list when no NAME is given)."""
    from flowcore.config.environment import canonical_name

    config = flow.config
    installed = _installed(flow)
    if name is None:
        if not installed:
            raise UsageError("no build kits are installed", "Install one: flow buildkit add PATH-OR-NAME")
        from flowcore._base.prompts import choose

        name = str(choose("Switch to which build kit?", installed, argument="NAME",
                          command="flow buildkit switch"))
    name = canonical_name(name)
    if name not in installed:
        from flowcore.cli.hints import missing_kit_fix

        raise UsageError(f"build kit '{name}' is not installed",
                         missing_kit_fix(name, installed, "flow buildkit switch {}"))
    config.set_active_kit(name)
    if config.scope == "project" and config.project is not None:
        click.echo(f"build kit of project {config.project.root}: {name}")
        return
    click.echo(f"active build kit: {name}")
