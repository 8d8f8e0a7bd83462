"""Global options given after the command: ``flow plugin add -g NAME`` as ``flow -g plugin add NAME``.

The root's options (``-g``, ``-k``, ``--root``, ``--config``, ``--debug``, ...) decide which kit
and plugins load, so they must be known before the command is looked up. ``hoist`` moves each
one found after the command to just before it, unless the command (or the sub-command it is
in) defines an option of that name itself: ``flow create -k NAME`` and
``flow cloudbuild-server --config FILE`` keep their own meaning. Only called when something
after the command looks like a global option (``flowcore.cli.main._mentions_global_option``).
"""

from __future__ import annotations

from typing import Any

import click

from flowcore._base.errors import FlowError

#: The root's options that may also follow the command (``flow plugin add -g NAME``).
LATE_OPTIONS = ("debug", "global_scope", "build_kit", "no_check_latest", "root", "config",
                "strict_plugins")


def hoist(group: click.Group, ctx: click.Context, args: list[str], at: int,
          parsed: dict[str, Any]) -> list[str]:
    """``args`` with the global options after the command (at index ``at``) moved before it."""
    globals_ = {d: p for p in group.params if p.name in LATE_OPTIONS for d in p.opts}
    head, name, tail = args[:at], args[at], args[at + 1:]
    command = _peek(name, parsed)
    if command is None:
        # Unknown in this scope: it may need the -g/-k given after it. Move those, look again.
        scope = {d: p for d, p in globals_.items() if p.name in ("global_scope", "build_kit")}
        moved, kept = _split(tail, None, scope)
        if not moved:
            return args
        parsed = {**parsed, **_values(group, ctx, moved)}
        return hoist(group, ctx, [*head, *moved, name, *kept], at + len(moved), parsed)
    moved, kept = _split(tail, command, globals_)
    return [*head, *moved, name, *kept]


def _values(group: click.Group, ctx: click.Context, tokens: list[str]) -> dict[str, Any]:
    try:
        return group.make_parser(ctx).parse_args(list(tokens))[0]
    except click.UsageError:
        return {}


def _peek(name: str, parsed: dict[str, Any]) -> click.Command | None:
    """The command ``name`` would run with the options parsed so far, without reporting
    anything (the real run does that), or ``None``."""
    from flowcore.plugins.registry_view import load_object
    from flowcore.registry.builtins import BUILTIN_COMMANDS

    if name in BUILTIN_COMMANDS:
        return load_object(BUILTIN_COMMANDS[name][0])  # type: ignore[return-value]
    from flowcore.cli.app import flow_from_params
    from flowcore.registry.command_registry import CommandRegistry

    try:
        return CommandRegistry(flow_from_params(parsed)).peek(name)
    except (FlowError, click.ClickException, OSError):
        return None


def _takes(param: click.Parameter) -> int:
    """How many tokens follow an option of ``param`` (0 for a flag)."""
    if isinstance(param, click.Option) and (param.is_flag or param.count):
        return 0
    return max(param.nargs, 1)


def _split(tail: list[str], command: click.Command | None,
           globals_: dict[str, click.Parameter]) -> tuple[list[str], list[str]]:
    """``(moved, kept)``: the global options of ``tail`` that ``command`` (and the sub-commands
    the tail names) does not define, and everything else, in order."""
    moved: list[str] = []
    kept: list[str] = []
    level = command
    i = 0
    while i < len(tail):
        token = tail[i]
        if token == "--" or _passes_options_on(level):
            # `flow test -k NAME`: a command that hands options it does not know to another
            # tool (pytest) owns everything after it.
            kept += tail[i:]
            break
        own = ({d: p for p in level.params if isinstance(p, click.Option)
                for d in (*p.opts, *p.secondary_opts)} if level is not None else {})
        opt, eq, _ = token.partition("=") if token.startswith("--") else (token, "", "")
        if opt in own:
            n = 0 if eq else _takes(own[opt])
            kept += tail[i:i + 1 + n]
            i += 1 + n
            continue
        param = globals_.get(opt)
        if param is None and not token.startswith("--") and token[:2] in globals_ \
                and token[:2] not in own and _takes(globals_[token[:2]]):
            param, eq = globals_[token[:2]], "attached"  # -kNAME
        if param is not None:
            n = 0 if eq else _takes(param)
            moved += tail[i:i + 1 + n]
            i += 1 + n
            continue
        kept.append(token)
        i += 1
        if token.startswith("-") and len(token) > 1:
            continue  # an option flow does not know here: click reports it
        if isinstance(level, click.Group):
            level = level.get_command(click.Context(level), token)
            if level is None:
                kept += tail[i:]
                break
    return moved, kept


def _passes_options_on(command: click.Command | None) -> bool:
    """True for a command that takes unknown options as arguments (``flow test`` -> pytest)."""
    if command is None:
        return False
    if (command.context_settings or {}).get("ignore_unknown_options"):
        return True
    return any(isinstance(p, click.Argument) and p.nargs == -1 and p.type is click.UNPROCESSED
               for p in command.params)
