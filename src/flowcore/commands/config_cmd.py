"""``flow config``: show the effective configuration and edit the global file."""

from __future__ import annotations

import json
from typing import Any

import click

from flowcore._base.errors import UsageError
from flowcore.cli.app import Flow
from flowcore.cli.completion_values import config_keys, settable_config_keys


def _render(value: Any) -> str:
    """A config value for the terminal: JSON escapes control characters itself; a string from
    a config file is made printable (``flowcore._base.printable``)."""
    if not isinstance(value, str):
        return json.dumps(value)
    from flowcore._base.printable import printable

    return printable(value)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the effective configuration as JSON.")
@click.pass_context
def config(ctx: click.Context, as_json: bool) -> None:
    """Show and change flow's configuration.

    Without a subcommand, prints the effective configuration and where each part came from:
    the global file ($FLOW_HOME/config.json), the project file, or the command line.
    """
    if ctx.invoked_subcommand is not None:
        return
    flow = ctx.find_object(Flow)
    if flow is None:  # flow's root command always sets one; a bare `config` command has none
        raise RuntimeError("flow config runs under flow's root command, which sets up its Flow")
    described = flow.config.describe()
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    # values come from config files (and folder names): one printable line each
    from flowcore._base.printable import printable_line as cell

    for key, entry in described.items():
        if key == "plugins":
            if not entry:
                click.echo("plugins: (none)")
            for plugin in entry:
                click.echo(cell(f"plugin: {plugin['value']} ({plugin['kind']})  from {plugin['from']}"))
            continue
        value = entry["value"]
        if isinstance(value, list):
            value = " ".join(value)
        value = value if value not in (None, "") else "(none)"
        click.echo(cell(f"{key}: {value}  from {entry['from']}"))


@config.command()
@click.argument("key", shell_complete=config_keys)
@click.pass_obj
def get(flow: Flow, key: str) -> None:
    """Print KEY (dotted, e.g. cloudbuild.server) from the global config."""
    try:
        value = flow.config.global_config.get(key)
    except KeyError:
        raise UsageError(
            f"'{key}' is not set in {flow.config.global_config.path}",
            f"Set it with: flow config set {key} VALUE",
        ) from None
    click.echo(_render(value))


@config.command(name="set")
@click.argument("key", shell_complete=settable_config_keys)
@click.argument("value")
@click.pass_obj
def set_(flow: Flow, key: str, value: str) -> None:
    """Set KEY to VALUE in the global config. VALUE is read as JSON when it parses, else as text."""
    from flowcore.config.schema import parse_for_set  # the key's kind; managed keys refused

    flow.config.set_value(key, parse_for_set(key, value))
