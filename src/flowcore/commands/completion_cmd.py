"""``flow completion SHELL``: print the shell completion script of ``flow``.

The script calls ``flow`` back with ``_FLOW_COMPLETE=<shell>_complete`` (click's shell
completion protocol); the completions come from the same command manifest as ``flow --help``,
so completing a command name imports no plugin. The values after a command (kit, plugin and
template names, config keys) come from the ``shell_complete`` callbacks at the end.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from flowcore._base.errors import UsageError

if TYPE_CHECKING:
    pass

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", required=False, type=click.Choice(SHELLS))
def completion(shell: str | None) -> None:
    """Print the shell completion script (bash, zsh or fish; default: your $SHELL)."""
    if shell is None:
        login = os.path.basename(os.environ.get("SHELL", ""))
        if login not in SHELLS:
            raise UsageError(f"no SHELL given, and $SHELL ({login or 'unset'}) is not one of "
                             f"{', '.join(SHELLS)}", "Name it: flow completion bash|zsh|fish")
        shell = login
    from click.shell_completion import get_completion_class

    from flowcore.cli.main import COMPLETE_VAR, cli

    script_class = get_completion_class(shell)
    assert script_class is not None  # every one of SHELLS is click's
    click.echo(script_class(cli, {}, "flow", COMPLETE_VAR).source())
