"""Built-in commands (listed in flowcore.registry.builtins). They orchestrate the layers below:
``flow plugin add`` = the PackageManager's add, then the CommandRegistry's refresh."""

from __future__ import annotations

from typing import Any

import click

#: Short names of sub-commands (Lerna's ``ls``/``rm``), for every group made with
#: ``AliasedGroup`` (``flow buildkit``, ``flow plugin``): alias -> the sub-command's name.
ALIASES: dict[str, str] = {"ls": "list", "rm": "delete"}


class AliasedGroup(click.Group):
    """A click group that also answers to the aliases of ``ALIASES`` and lists them in its
    help (``list (ls)``)."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and ALIASES.get(cmd_name) in self.commands:
            command = super().get_command(ctx, ALIASES[cmd_name])
        return command

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        return (command.name if command is not None else name), command, rest

    def aliases_of(self, name: str) -> list[str]:
        return [a for a, target in ALIASES.items()
                if target == name and a not in self.commands]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        shown = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                aliases = self.aliases_of(name)
                shown.append((f"{name} ({', '.join(aliases)})" if aliases else name, command))
        if shown:  # as click lays them out, with the labels' width
            limit = formatter.width - 6 - max(len(label) for label, _ in shown)
            rows = [(label, command.get_short_help_str(limit)) for label, command in shown]
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[Any]:
        items = super().shell_complete(ctx, incomplete)
        if any(i.type == "plain" for i in items) or incomplete.startswith("-"):
            return items  # the sub-commands' own names first; an alias only on its own
        from click.shell_completion import CompletionItem

        return items + [CompletionItem(a) for a, target in ALIASES.items()
                        if a.startswith(incomplete) and target in self.commands]
