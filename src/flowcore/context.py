"""What a kit or plugin can reach of flow: its context.

A kit and its kit-bound (or project) plugins get a :class:`KitContext`; general plugins get a
:class:`CoreContext`. Both expose exactly four things: a logger, access to the configuration
(read everything, write only the plugin's own section), the package manager, and command
registration. The core instance itself is deliberately not an attribute, so plugins cannot grow
dependencies on flow's internals.

Own sections: a kit's section is ``kitConfig.<short_name>`` in ``$FLOW_HOME/config.json`` and
``[tool.flow.<short_name>]`` in a project; a plugin's is ``pluginConfig.<short_name>`` and
``[tool.flow.<short_name>]``, where a plugin's short name is its distribution name without the
``flow-plugin-`` prefix. Inside a project, the project's table overrides the global one key by key.

A command can find the context of the plugin that registered it with :func:`current`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

    import click

    from flowcore.config import EffectiveConfig

__all__ = ["CoreContext", "KitContext", "PluginConfig", "current", "short_name_of"]

_CURRENT: ContextVar[CoreContext | None] = ContextVar("flow_plugin_context", default=None)


def short_name_of(dist_name: str) -> str:
    """Default short name: the distribution name without ``flow-kit-`` / ``flow-plugin-``."""
    for prefix in ("flow-kit-", "flow-plugin-"):
        if dist_name.startswith(prefix) and len(dist_name) > len(prefix):
            return dist_name[len(prefix):]
    return dist_name


def current() -> CoreContext:
    """The context of the plugin whose command is running now (raises outside a command)."""
    ctx = _CURRENT.get()
    if ctx is None:
        raise LookupError("no flow plugin command is running")
    return ctx


class PluginConfig:
    """Configuration access for one kit or plugin: read all of it, write only its own section."""

    __slots__ = ("_effective", "_table", "_short")

    def __init__(self, effective: EffectiveConfig, table: str, short_name: str) -> None:
        self._effective = effective
        self._table = table  # "kitConfig" or "pluginConfig"
        self._short = short_name

    def read(self) -> dict[str, Any]:
        """A copy of the whole configuration: ``{"global": {...}, "project": {...} | None}``."""
        project = self._effective.project
        return {
            "global": copy.deepcopy(self._effective.global_config.data),
            "project": copy.deepcopy(project.data) if project is not None else None,
        }

    @property
    def section(self) -> dict[str, Any]:
        """This plugin's own section: the global one, overridden by the project's table."""
        merged = copy.deepcopy(self._effective.global_config.data.get(self._table, {})
                               .get(self._short, {}))
        project = self._effective.project
        if project is not None and self._effective.scope == "project":
            merged.update(copy.deepcopy(project.section(self._short)))
        return merged

    def update_section(self, mutate: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """Change this plugin's section of the global config (locked, atomic); returns it."""
        from flowcore.config import update_global

        def apply(data: dict[str, Any]) -> None:
            table = data.setdefault(self._table, {})
            mutate(table.setdefault(self._short, {}))

        updated = update_global(apply)
        self._effective.global_config = updated
        return copy.deepcopy(updated.data[self._table][self._short])

    def set(self, key: str, value: Any) -> None:
        """Set one key of this plugin's section in the global config."""
        self.update_section(lambda section: section.__setitem__(key, value))


class CoreContext:
    """The context of a general plugin."""

    __slots__ = ("plugin", "short_name", "config", "_packages", "_register", "_logger")

    def __init__(
        self,
        plugin: str,
        effective: EffectiveConfig,
        packages: Callable[[], Any],
        *,
        short_name: str | None = None,
        table: str = "pluginConfig",
    ) -> None:
        #: The distribution name of the plugin this context belongs to.
        self.plugin = plugin
        self.short_name = short_name or short_name_of(plugin)
        self._logger: logging.Logger | None = None
        self.config = PluginConfig(effective, table, self.short_name)
        self._packages = packages
        self._register: Callable[..., None] | None = None

    @property
    def logger(self) -> logging.Logger:
        """A logger named ``flow.<distribution>``; ``--debug`` shows its debug records."""
        if self._logger is None:
            import logging

            self._logger = logging.getLogger(f"flow.{self.plugin}")
        return self._logger

    @property
    def packages(self) -> Any:
        """flow's PackageManager (install, remove, list kits and plugins)."""
        return self._packages()

    def register_command(self, command: click.Command, name: str | None = None) -> None:
        """Same as ``registry.add``; only valid while ``flow_register_commands`` runs."""
        if self._register is None:
            raise RuntimeError("register_command() is only valid inside flow_register_commands")
        self._register(command, name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.plugin}>"


class KitContext(CoreContext):
    """The context of a build kit and of the plugins bound to it."""

    __slots__ = ("kit", "kit_short_name", "kit_config")

    def __init__(
        self,
        plugin: str,
        effective: EffectiveConfig,
        packages: Callable[[], Any],
        *,
        kit: str,
        kit_short_name: str,
    ) -> None:
        is_kit = plugin == kit
        super().__init__(
            plugin,
            effective,
            packages,
            short_name=kit_short_name if is_kit else None,
            table="kitConfig" if is_kit else "pluginConfig",
        )
        #: The kit's distribution name and short name (its config section).
        self.kit = kit
        self.kit_short_name = kit_short_name
        #: The kit's own section (read it; only the kit itself writes it).
        self.kit_config = self.config if is_kit else PluginConfig(
            effective, "kitConfig", kit_short_name
        )


def activate(context: CoreContext | None) -> Any:
    """Make ``context`` the one :func:`current` returns; returns a token for :func:`deactivate`."""
    return _CURRENT.set(context)


def deactivate(token: Any) -> None:
    _CURRENT.reset(token)
