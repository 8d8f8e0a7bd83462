"""The public API of flowcore: everything a build kit or plugin may import from flowcore.

Import from here (``from flowcore.api import current, FlowError``) or from ``flowcore`` itself,
which re-exports the same names. Every other module of flowcore is private and may change in any
release; a test pins ``__all__`` and another fails when a kit or plugin of this repository
imports anything else. The API is versioned by :data:`FLOW_API_VERSION`, which a plugin's
``FLOW_API`` specifier is checked against when it is installed and loaded.

What there is, by purpose:

* **Hooks**: :data:`hookimpl` marks an implementation (``@hookimpl``, or ``@hookimpl(tryfirst=True)``,
  ``@hookimpl(wrapper=True)``, ... as pluggy documents). The hooks themselves are listed in
  ``docs/hooks.md``; their arguments are typed with the Protocols below, and the mappings they
  exchange with the TypedDicts :class:`KitInfo` and :class:`Template`. A kit declares hooks of
  its own with :data:`hookspec` in its own module, adds them in ``flow_addhooks(hooks)``
  (``hooks`` is a :class:`HookSpecs`), and calls them as ``context.hook.<name>(...)``
  (``context.hook`` is a :class:`HookCaller`).
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

Importing this module is cheap: pluggy (behind ``hookimpl`` and ``hookspec``) and the watch loop are imported on
first use of those names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowcore._base.errors import (
    ConfigError,
    FlowError,
    InstallError,
    PluginLoadError,
    UsageError,
    warn,
)
from flowcore._base.fileio import atomic_write_bytes
from flowcore._base.paths import flow_home
from flowcore._base.printable import printable, printable_line
from flowcore._base.prompts import choose, interactive
from flowcore._base.version import FLOW_API_VERSION, __version__
from flowcore.config.environment import site_packages_dir, uv_binary
from flowcore.plugins.context import current as _current
from flowcore.plugins.protocols import (
    CoreContext,
    HookCaller,
    HookSpecs,
    InstalledPackage,
    KitContext,
    KitInfo,
    Packages,
    PluginConfig,
    Registry,
    Template,
)

if TYPE_CHECKING:

    import pluggy

    from flowcore._base.watching import Change, watch

__all__ = [
    # versions
    "FLOW_API_VERSION",
    "__version__",
    # hooks and the types of their arguments
    "hookimpl",
    "hookspec",
    "HookSpecs",
    "HookCaller",
    "KitInfo",
    "Template",
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


def current() -> CoreContext:
    """The context of the plugin whose command is running now.

    Outside flow's dispatch, a command run under click's ``CliRunner`` with a core instance as
    ``obj`` gets a context of that run. Raises ``LookupError`` when there is no flow run at all,
    so a command can still work on its own (``except LookupError``).
    """
    return _current()


_LAZY = {"hookimpl": "flowcore.plugins.markers", "hookspec": "flowcore.plugins.markers",
         "watch": "flowcore._base.watching",
         "Change": "flowcore._base.watching"}

if TYPE_CHECKING:
    hookimpl: pluggy.HookimplMarker
    hookspec: pluggy.HookspecMarker


def __getattr__(name: str) -> object:
    # pluggy (which imports importlib.metadata) and watchfiles are paid for on first use only.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flowcore.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
