"""CommandRegistry: which commands exist, who added each, and how to load one.

Built-in commands come from ``flowcore.commands.BUILTIN_COMMANDS``; kit and plugin commands are
added by the PluginSystem (see ``flowcore.plugins``). Listing never imports a command's module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flowcore.commands import BUILTIN_COMMANDS

if TYPE_CHECKING:
    import click

    from flowcore.app import Flow

BUILTIN = "built-in"


@dataclass(frozen=True)
class CommandInfo:
    """What ``flow --help`` shows for one command, without loading it."""

    name: str
    help: str
    source: str


def load_object(target: str) -> object:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class CommandRegistry:
    """The command tree of one run."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow

    def list(self) -> list[CommandInfo]:
        """Every command of this run, sorted by name."""
        infos = [CommandInfo(n, h, BUILTIN) for n, (_, h) in BUILTIN_COMMANDS.items()]
        return sorted(infos, key=lambda i: i.name)

    def get(self, name: str) -> click.Command | None:
        """Load the command called ``name``, importing only what it needs."""
        if name in BUILTIN_COMMANDS:
            return load_object(BUILTIN_COMMANDS[name][0])  # type: ignore[return-value]
        return None
