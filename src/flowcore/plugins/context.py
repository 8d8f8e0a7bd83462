"""The contexts handed to kits and plugins: what they can reach of flow, and nothing more.

A kit and its kit-bound (or project) plugins get a :class:`KitPluginContext`; general plugins get
a :class:`PluginContext`. Their public shape is declared as Protocols in :mod:`flowcore.api` (the
one module kits and plugins import: ``KitContext``, ``CoreContext``, ``PluginConfig``); these are
the implementations, named apart from the Protocols so that a traceback or ``repr`` never leaves
a reader wondering which of the two they hold. The core instance itself is
deliberately not reachable from them, so plugins cannot grow dependencies on flow's internals:
everything a plugin needs of the run (project root, scope, active kit, the plugins loaded, the
managed environments, other plugins' hooks) is a read-only property here.

Own sections: a kit's section is ``kitConfig.<short_name>`` in ``$FLOW_HOME/config.json`` and
``[tool.flow.<short_name>]`` in a project; a plugin's is ``pluginConfig.<short_name>`` and
``[tool.flow.<short_name>]``, where a plugin's short name is its distribution name without the
``flow-plugin-`` prefix. Inside a project, the project's table overrides the global one key by key.

A command finds the context of the plugin that registered it with :func:`current`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from flowcore.config.environment import short_name_of

if TYPE_CHECKING:
    import logging
    from pathlib import Path

    import click

    from flowcore.config import EffectiveConfig
    from flowcore.plugins.protocols import Packages

__all__ = ["ConfigSection", "HookRelay", "KitPluginContext", "PluginContext", "current",
           "short_name_of"]

_CURRENT: ContextVar[PluginContext | None] = ContextVar("flow_plugin_context", default=None)

#: How a context calls a hook on every kit and plugin of the run (``PluginSystem.call``).
HookCall = Callable[..., list[object]]


def current() -> PluginContext:
    """The context of the plugin whose command is running now.

    Inside flow's dispatch this is the context the PluginSystem made for the command's plugin.
    A command run on its own (click's ``CliRunner`` with a core instance as ``obj``, as the
    example plugins' tests do) gets a context of that run for the distribution its callback's
    top-level package names. Raises ``LookupError`` when neither is there.
    """
    ctx = _CURRENT.get()
    if ctx is None:
        ctx = _context_from_click()
    if ctx is None:
        raise LookupError("no flow command is running")
    return ctx


def _context_from_click() -> PluginContext | None:
    import click

    click_ctx = click.get_current_context(silent=True)
    if click_ctx is None:
        return None
    # The run is the root context's object (flowcore.cli.app.Flow, or one a test passed as
    # ``obj``); named by what it offers, so this layer does not import the CLI's.
    plugins = getattr(click_ctx.find_root().obj, "plugins", None)
    context_for = getattr(plugins, "context_for", None)
    if context_for is None:
        return None
    module = getattr(click_ctx.command.callback, "__module__", None) or ""
    found: PluginContext = context_for(module.split(".")[0].replace("_", "-"))
    return found


class ConfigSection:
    """Configuration access for one kit or plugin (``flowcore.api.PluginConfig``): read all of
    it, write only its own section."""

    __slots__ = ("_effective", "_table", "_short")

    def __init__(self, effective: EffectiveConfig, table: str, short_name: str) -> None:
        self._effective = effective
        self._table = table  # "kitConfig" or "pluginConfig"
        self._short = short_name

    def read(self) -> dict[str, object]:
        """A copy of the whole configuration: ``{"global": {...}, "project": {...} | None}``."""
        import copy  # here, not on the dispatch path of every plugin command

        project = self._effective.project
        return {
            "global": copy.deepcopy(self._effective.global_config.data),
            "project": copy.deepcopy(project.data) if project is not None else None,
        }

    @property
    def section(self) -> dict[str, object]:
        """This plugin's own section: the global one, overridden by the project's table."""
        import copy

        merged = copy.deepcopy(self._effective.global_config.section(self._table, self._short))
        project = self._effective.project
        if project is not None and self._effective.scope == "project":
            merged.update(copy.deepcopy(project.section(self._short)))
        return merged

    def get(self, key: str, default: object = None) -> object:
        """One key of :attr:`section` (the project's table over the global section), or
        ``default``: what the plugin guide's ``context.kit_config.get("key", default)`` reads."""
        return self.section.get(key, default)

    def update_section(self, mutate: Callable[[dict[str, object]], object]) -> dict[str, object]:
        """Change this plugin's section of the global config (locked, atomic); returns it."""
        return self._effective.update_section(self._table, self._short, mutate)

    def set(self, key: str, value: object) -> None:
        """Set one key of this plugin's section in the global config."""
        self.update_section(lambda section: section.__setitem__(key, value))


class HookRelay:
    """``context.hook``: each attribute calls the hook of that name on every kit and plugin of
    the run (``flowcore.api.HookCaller``), so a kit writes ``context.hook.flow_x(a=1)`` where
    it used to write ``context.call_hook("flow_x", a=1)`` and a type checker can follow it."""

    __slots__ = ("_call",)

    def __init__(self, call: HookCall | None) -> None:
        self._call = call

    def __getattr__(self, name: str) -> Callable[..., list[object]]:
        if name.startswith("_"):
            raise AttributeError(name)
        call = self._call

        def caller(**kwargs: object) -> list[object]:
            return call(name, **kwargs) if call is not None else []

        caller.__name__ = caller.__qualname__ = name
        return caller

    def __repr__(self) -> str:
        return "<flow hooks>"


class PluginContext:
    """The context of a general plugin (``flowcore.api.CoreContext``)."""

    __slots__ = ("plugin", "short_name", "config", "hook", "_effective", "_packages", "_call",
                 "_register", "_logger")

    def __init__(
        self,
        plugin: str,
        effective: EffectiveConfig,
        packages: Callable[[], Packages],
        *,
        call_hook: HookCall | None = None,
        hook_call: HookCall | None = None,
        short_name: str | None = None,
        table: str = "pluginConfig",
    ) -> None:
        #: The distribution name of the plugin this context belongs to.
        self.plugin = plugin
        self.short_name = short_name or short_name_of(plugin)
        self._logger: logging.Logger | None = None
        self._effective = effective
        self.config = ConfigSection(effective, table, self.short_name)
        #: The hooks of this run, called as attributes (see :class:`HookRelay`).
        self.hook = HookRelay(hook_call or call_hook)
        self._packages = packages
        self._call = call_hook
        self._register: Callable[[click.Command, str | None], None] | None = None

    @property
    def logger(self) -> logging.Logger:
        """A logger named ``flow.<distribution>``; ``--debug`` shows its debug records."""
        if self._logger is None:
            import logging

            self._logger = logging.getLogger(f"flow.{self.plugin}")
        return self._logger

    # -- the run ---------------------------------------------------------------------------

    @property
    def scope(self) -> str:
        """``"project"`` inside a project (unless ``-g``), else ``"global"``."""
        return self._effective.scope

    @property
    def project_root(self) -> Path | None:
        """The project's root directory in project scope; ``None`` in global scope."""
        project = self._effective.project
        return project.root if project is not None and self.scope == "project" else None

    @property
    def active_kit(self) -> str | None:
        """The distribution name of this run's build kit (``-k``, the project's, the global)."""
        return self._effective.active_kit

    @property
    def plugins_to_load(self) -> list[tuple[str, str]]:
        """``(distribution, kind)`` of this run's plugins in load order; kind is ``"kit"``
        (kit-bound), ``"project"`` or ``"general"``."""
        return [(ref.name, ref.kind) for ref in self._effective.plugins_to_load]

    @property
    def flow_home(self) -> Path:
        """flow's global home (``FLOW_HOME``, default ``~/.flow``)."""
        from flowcore._base import paths

        return paths.flow_home()

    @property
    def environments(self) -> list[Path]:
        """The managed environments this run imports kits and plugins from, project's first."""
        from flowcore.config.environment import env_dirs_for

        return env_dirs_for(self._effective)

    @property
    def packages(self) -> Packages:
        """flow's package manager: install, remove and list kits and plugins."""
        return self._packages()

    # -- other plugins ---------------------------------------------------------------------

    def call_hook(self, hook: str, **kwargs: object) -> list[object]:
        """Call ``hook`` on every kit and plugin of this run; their non-``None`` answers in order.

        Kept for kits written before ``context.hook``, which is the way now (typed, and a name
        nothing declares is an error there instead of an empty list). Each implementation gets
        its own plugin's ``context``; one that raises is reported once, naming it, and left out.
        """
        if self._call is None:
            return []
        return self._call(hook, **kwargs)

    def register_command(self, command: click.Command, name: str | None = None) -> None:
        """Same as ``registry.add``; only valid while ``flow_register_commands`` runs."""
        if self._register is None:
            raise RuntimeError("register_command() is only valid inside flow_register_commands")
        self._register(command, name)

    def bind_registry(self, add: Callable[[click.Command, str | None], None] | None) -> None:
        """Point ``register_command`` at this plugin's registry view while
        ``flow_register_commands`` runs (the PluginSystem's side; not in the public API)."""
        self._register = add

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.plugin}>"


class KitPluginContext(PluginContext):
    """The context of a build kit and of the plugins bound to it (``flowcore.api.KitContext``)."""

    __slots__ = ("kit", "kit_short_name", "kit_config")

    def __init__(
        self,
        plugin: str,
        effective: EffectiveConfig,
        packages: Callable[[], Packages],
        *,
        kit: str,
        kit_short_name: str,
        call_hook: HookCall | None = None,
        hook_call: HookCall | None = None,
    ) -> None:
        is_kit = plugin == kit
        super().__init__(
            plugin,
            effective,
            packages,
            call_hook=call_hook,
            hook_call=hook_call,
            short_name=kit_short_name if is_kit else None,
            table="kitConfig" if is_kit else "pluginConfig",
        )
        #: The kit's distribution name and short name (its config section).
        self.kit = kit
        self.kit_short_name = kit_short_name
        #: The kit's own section (read it; only the kit itself writes it).
        self.kit_config = self.config if is_kit else ConfigSection(
            effective, "kitConfig", kit_short_name
        )


def activate(context: PluginContext | None) -> Token[PluginContext | None]:
    """Make ``context`` the one :func:`current` returns; returns a token for :func:`deactivate`."""
    return _CURRENT.set(context)


def deactivate(token: Token[PluginContext | None]) -> None:
    _CURRENT.reset(token)
