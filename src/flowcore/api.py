"""The public API of flowcore: everything a build kit or plugin may import from flowcore.

Import from here (``from flowcore.api import current, FlowError``) or from ``flowcore`` itself,
which re-exports the same names. Every other module of flowcore is private and may change in any
release; a test pins ``__all__`` and another fails when a kit or plugin of this repository
imports anything else. The API is versioned by :data:`FLOW_API_VERSION`, which a plugin's
``FLOW_API`` specifier is checked against when it is installed and loaded.

What there is, by purpose:

* **Hooks**: :data:`hookimpl` marks an implementation (``@hookimpl``, or ``@hookimpl(tryfirst=True)``,
  ``@hookimpl(wrapper=True)``, ... as pluggy documents). The hooks themselves are listed in
  ``docs/hooks.md``; their arguments are typed with the Protocols below.
* **Contexts**: every hook gets ``context`` (:class:`CoreContext`, or :class:`KitContext` for a
  kit and its kit-bound or project plugins), and a running command gets the same object from
  :func:`current`. Through it a plugin reads the run (project root, scope, active kit, plugins,
  managed environments), its own config section, calls other plugins' hooks and logs.
* **Errors**: raise :class:`FlowError` (failed work, exit 1) or :class:`UsageError` (bad command
  line, exit 2) with a cause and a fix; flow prints ``flow: error: <cause>. <fix>``. :func:`warn`
  prints a warning in the same shape without stopping.
* **Text from outside**: :func:`printable` and :func:`printable_line` remove control characters
  and escape sequences (a window title, the clipboard, cursor moves) from text a kit prints but
  did not write, such as a server's or a tool's output; errors and warnings get it from flow.
* **Prompts**: :func:`choose` asks on a terminal and, without one, fails naming the flag or
  argument to pass instead; :func:`interactive` says whether anyone can be asked.
* **Files and tools**: :func:`atomic_write_bytes` (readers see the old or the new file, never a
  mix), :func:`flow_home`, :func:`site_packages_dir` of a managed environment, :func:`uv_binary`,
  and :func:`watch` (rebuild-on-change loop) with its :class:`Change`.

Importing this module is cheap: pluggy (behind ``hookimpl``) and the watch loop are imported on
first use of those names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from flowcore import FLOW_API_VERSION, __version__
from flowcore._fileio import atomic_write_bytes
from flowcore._printable import printable, printable_line
from flowcore.context import current as _current
from flowcore.environment import site_packages_dir, uv_binary
from flowcore.errors import (
    ConfigError,
    FlowError,
    InstallError,
    PluginLoadError,
    UsageError,
    warn,
)
from flowcore.paths import flow_home
from flowcore.prompts import choose, interactive

if TYPE_CHECKING:
    import logging
    from pathlib import Path

    import click
    import pluggy

    from flowcore.watching import Change, watch

__all__ = [
    # versions
    "FLOW_API_VERSION",
    "__version__",
    # hooks and the types of their arguments
    "hookimpl",
    "Registry",
    "CoreContext",
    "KitContext",
    "PluginConfig",
    "Packages",
    "InstalledPackage",
    "current",
    # errors and warnings
    "FlowError",
    "UsageError",
    "ConfigError",
    "InstallError",
    "PluginLoadError",
    "warn",
    # text from outside, safe for a terminal
    "printable",
    "printable_line",
    # prompts
    "choose",
    "interactive",
    # files, environments, tools
    "atomic_write_bytes",
    "flow_home",
    "site_packages_dir",
    "uv_binary",
    "watch",
    "Change",
]


# ---------------------------------------------------------------------------------------------
# Types of hook arguments. Protocols: flow's own classes implement them, and a plugin's unit
# test can hand a hook any object of the same shape.
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class Registry(Protocol):
    """The ``registry`` argument of ``flow_register_commands``: this plugin's view of flow's
    top-level commands (flow records the plugin as each command's source)."""

    def add(self, command: click.Command, name: str | None = None) -> None:
        """Add a ``click.Command`` (or group) under ``name``, else under its own name."""
        ...


@runtime_checkable
class PluginConfig(Protocol):
    """``context.config``: read all of flow's configuration, write only this plugin's section."""

    def read(self) -> dict[str, object]:
        """A copy of the whole configuration: ``{"global": {...}, "project": {...} | None}``."""
        ...

    @property
    def section(self) -> dict[str, object]:
        """This plugin's own section: ``pluginConfig.<short>`` (``kitConfig.<short>`` for a kit)
        of ``$FLOW_HOME/config.json``, overridden key by key by ``[tool.flow.<short>]`` in a
        project."""
        ...

    def update_section(self, mutate: Callable[[dict[str, object]], object]) -> dict[str, object]:
        """Change this plugin's section of the global config (locked, atomic); returns it."""
        ...

    def set(self, key: str, value: object) -> None:
        """Set one key of this plugin's section in the global config."""
        ...


@runtime_checkable
class InstalledPackage(Protocol):
    """A kit or plugin that :class:`Packages` installed."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def kind(self) -> str:
        """``"kit"`` or ``"plugin"``."""
        ...


@runtime_checkable
class Packages(Protocol):
    """``context.packages``: install, remove and list kits and plugins, as the ``flow buildkit``
    and ``flow plugin`` commands do (same transactions, same config updates)."""

    def installed_versions(self, scope: str = "global") -> dict[str, str]:
        """``{distribution: version}`` of a managed environment (``"global"``/``"project"``)."""
        ...

    def add_kits(self, specs: Sequence[str], find_links: Sequence[str] = (),
                 no_index: bool = False) -> Sequence[InstalledPackage]: ...

    def add_plugins(self, specs: Sequence[str], find_links: Sequence[str] = (),
                    no_index: bool = False) -> Sequence[InstalledPackage]: ...

    def delete_kits(self, names: Sequence[str]) -> list[str]: ...

    def delete_plugins(self, names: Sequence[str]) -> list[str]: ...


@runtime_checkable
class CoreContext(Protocol):
    """What every kit and plugin gets as ``context`` (a general plugin gets exactly this)."""

    @property
    def plugin(self) -> str:
        """This plugin's distribution name."""
        ...

    @property
    def short_name(self) -> str:
        """Its short name: the distribution name without ``flow-plugin-``/``flow-kit-`` (the
        name of its config section)."""
        ...

    @property
    def logger(self) -> logging.Logger:
        """A logger named ``flow.<distribution>``; ``--debug`` shows its debug records."""
        ...

    @property
    def config(self) -> PluginConfig: ...

    @property
    def scope(self) -> str:
        """``"project"`` inside a project (unless ``-g``), else ``"global"``."""
        ...

    @property
    def project_root(self) -> Path | None:
        """The project's root directory in project scope; ``None`` in global scope."""
        ...

    @property
    def active_kit(self) -> str | None:
        """The distribution name of this run's build kit, if any."""
        ...

    @property
    def plugins_to_load(self) -> list[tuple[str, str]]:
        """``(distribution, kind)`` of this run's plugins in load order; kind is ``"kit"``
        (kit-bound), ``"project"`` or ``"general"``."""
        ...

    @property
    def flow_home(self) -> Path:
        """flow's global home (``FLOW_HOME``, default ``~/.flow``)."""
        ...

    @property
    def environments(self) -> list[Path]:
        """The managed environments kits and plugins are imported from, the project's first."""
        ...

    @property
    def packages(self) -> Packages: ...

    def call_hook(self, hook: str, **kwargs: object) -> list[object]:
        """Call ``hook`` on every kit and plugin of this run; their non-``None`` answers in
        load order. Each gets its own context; one that raises is reported and left out."""
        ...

    def register_command(self, command: click.Command, name: str | None = None) -> None:
        """Same as ``registry.add``; only valid while ``flow_register_commands`` runs."""
        ...


@runtime_checkable
class KitContext(CoreContext, Protocol):
    """The ``context`` of a build kit and of its kit-bound (or project) plugins."""

    @property
    def kit(self) -> str:
        """The kit's distribution name."""
        ...

    @property
    def kit_short_name(self) -> str:
        """The kit's short name: its config section, ``[tool.flow.<kit_short_name>]``."""
        ...

    @property
    def kit_config(self) -> PluginConfig:
        """The kit's own section (read it; only the kit itself writes it)."""
        ...


def current() -> CoreContext:
    """The context of the plugin whose command is running now.

    Outside flow's dispatch, a command run under click's ``CliRunner`` with a core instance as
    ``obj`` gets a context of that run. Raises ``LookupError`` when there is no flow run at all,
    so a command can still work on its own (``except LookupError``).
    """
    return _current()


_LAZY = {"hookimpl": "flowcore._markers", "watch": "flowcore.watching",
         "Change": "flowcore.watching"}

if TYPE_CHECKING:
    hookimpl: pluggy.HookimplMarker


def __getattr__(name: str) -> object:
    # pluggy (which imports importlib.metadata) and watchfiles are paid for on first use only.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flowcore.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
