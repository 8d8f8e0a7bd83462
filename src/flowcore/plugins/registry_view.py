"""What a plugin's ``flow_register_commands`` hook gets as ``registry``, and how an entry point's
``module:attribute`` is imported. Here, below the CommandRegistry, because the PluginSystem hands
the views out and collects them; the CommandRegistry resolves what they hold."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click


def load_object(target: str) -> object:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class RegistryView:
    """The ``registry`` argument of ``flow_register_commands``: one plugin's view.

    ``add`` records the plugin as the source of each command; the CommandRegistry resolves names
    taken twice after every plugin has registered.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.commands: list[tuple[str, click.Command]] = []

    def add(self, command: click.Command, name: str | None = None) -> None:
        """Add a ``click.Command`` (or group) at flow's top level, under ``name`` or its own."""
        import click

        if not isinstance(command, click.Command):
            raise TypeError(f"registry.add() needs a click command, got {type(command).__name__}")
        name = name or command.name
        if not name:
            raise ValueError("registry.add() needs a command with a name")
        self.commands.append((name, command))
