"""What <Tab> offers after a command: kit, plugin and template names, config keys.

Each is a click ``shell_complete`` callback (``click.Parameter(shell_complete=...)``), so bash,
zsh and fish get the same values; ``flow completion SHELL`` (flowcore.commands.completion_cmd)
prints the script that asks for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from flowcore.cli.app import Flow, flow_of

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem


# -- completing values: what <Tab> offers after a command -----------------------------------
# Each is a click ``shell_complete`` callback (``click.Parameter(shell_complete=...)``), so bash,
# zsh and fish get the same values. They read the config (and, for template names, load the kit
# as ``flow create --list`` does); whatever goes wrong, they offer nothing rather than print
# into the user's prompt.


def _flow_of(ctx: click.Context) -> Flow:
    return flow_of(ctx.find_root())


def _offer(ctx: click.Context, param: click.Parameter, incomplete: str,
           names: Any) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem

    given = ctx.params.get(param.name or "") or ()
    given = (given,) if isinstance(given, str) else tuple(given)
    out: list[CompletionItem] = []
    for name in names:
        if isinstance(name, tuple):
            name, help_ = name
        else:
            help_ = None
        if name.startswith(incomplete) and name not in given and name not in {i.value for i in out}:
            out.append(CompletionItem(name, help=help_))
    return out


def _quietly(find: Callable[[click.Context], Any]) -> Callable[..., list[CompletionItem]]:
    def complete(ctx: click.Context, param: click.Parameter,
                 incomplete: str) -> list[CompletionItem]:
        import contextlib
        import io

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return _offer(ctx, param, incomplete, find(ctx))
        except Exception:  # noqa: BLE001 - a completion must never break the prompt
            return []

    return complete


@_quietly
def kit_names(ctx: click.Context) -> list[str]:
    """The installed build kits (``flow buildkit switch/delete``, ``-k``)."""
    return list(_flow_of(ctx).config.global_config.installed_kits)


@_quietly
def plugin_names(ctx: click.Context) -> list[str]:
    """The plugins this scope's config lists (what ``flow plugin delete`` can remove)."""
    return list(_flow_of(ctx).config.configured_plugins)


def _dotted(node: Any, prefix: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key:
                out.append(prefix + key)
                out += _dotted(value, f"{prefix}{key}.")
    return out


@_quietly
def config_keys(ctx: click.Context) -> list[str]:
    """``flow config get``: every dotted key the global config holds."""
    return _dotted(_flow_of(ctx).config.global_config.data)


@_quietly
def settable_config_keys(ctx: click.Context) -> list[str]:
    """``flow config set``: the package source keys, ``create.git``, the active kit's own keys
    (``kitConfig.<short name>.<key>`` from its ``config_schema``, read from the cached command
    manifest) and the other keys the file holds."""
    from flowcore.config.schema import settable_keys, written_by_flow
    from flowcore.registry.command_registry import CommandRegistry

    flow = _flow_of(ctx)
    keys = settable_keys()
    kit = CommandRegistry(flow).manifest().kit or {}
    schema = kit.get("config_schema")
    if isinstance(schema, dict) and kit.get("short_name"):
        keys += [f"kitConfig.{kit['short_name']}.{k}" for k in schema]
    keys += [k for k in _dotted(flow.config.global_config.data)
             if k.split(".")[0] not in written_by_flow()]
    return keys


@_quietly
def template_names(ctx: click.Context) -> list[tuple[str, str]]:
    """``flow create -t``: the templates of the kit ``create`` would use (its ``-k``, the root's
    ``-k``, the only installed kit, else the active one). Template names come from hooks, so this
    loads that kit and its plugins, as ``flow create --list`` does (no other completion does)."""
    from flowcore.cli.app import Flow
    from flowcore.config import RunOptions
    from flowcore.create.templates import collect_templates

    flow = _flow_of(ctx)
    installed = flow.config.global_config.installed_kits
    kit = ctx.params.get("kit") or flow.options.build_kit
    if not kit:
        kit = installed[0] if len(installed) == 1 else flow.config.global_config.active_kit
    if kit not in installed:
        return []
    kit_flow = Flow(RunOptions(global_scope=True, build_kit=kit, check_latest=False),
                    cwd=flow.cwd)
    return [(t.name, t.description) for t in collect_templates(kit_flow, kit)]
