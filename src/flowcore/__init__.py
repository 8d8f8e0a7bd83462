"""flowcore: the core of flow, a plugin-driven project-workflow CLI.

The public API for kit and plugin authors is :mod:`flowcore.api`; this package re-exports the
same names (``from flowcore import hookimpl, current, FlowError``). Every other module is private.
The re-exports are resolved on first use, so that importing ``flowcore`` (which the CLI does on
every start) imports neither the API module nor pluggy and, through it, ``importlib.metadata``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowcore._base.version import FLOW_API_VERSION, __version__

# The same list as flowcore.api.__all__ (a test holds them equal), written out so that
# ``import flowcore`` does not have to import the API module to know it.
__all__ = [
    "FLOW_API_VERSION",
    "__version__",
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
    "FlowError",
    "UsageError",
    "ConfigError",
    "InstallError",
    "PluginLoadError",
    "warn",
    "printable",
    "printable_line",
    "choose",
    "interactive",
    "atomic_write_bytes",
    "flow_home",
    "site_packages_dir",
    "uv_binary",
    "watch",
    "Change",
]

if TYPE_CHECKING:
    # What type checkers see for the names __getattr__ resolves at run time (their real types:
    # ``@hookimpl`` is pluggy's HookimplMarker, not ``object``). Never executed, so importing
    # flowcore still imports neither flowcore.api nor pluggy.
    from flowcore.api import (
        Change,
        ConfigError,
        CoreContext,
        FlowError,
        HookCaller,
        HookSpecs,
        InstalledPackage,
        InstallError,
        KitContext,
        KitInfo,
        Packages,
        PluginConfig,
        PluginLoadError,
        Registry,
        Template,
        UsageError,
        atomic_write_bytes,
        choose,
        current,
        flow_home,
        hookimpl,
        hookspec,
        interactive,
        printable,
        printable_line,
        site_packages_dir,
        uv_binary,
        warn,
        watch,
    )


def __getattr__(name: str) -> object:
    if name in ("hookimpl", "hookspec"):  # what plugins and kits import first: pluggy's markers,
        from flowcore.plugins import markers  # not the whole API

        return getattr(markers, name)
    if name in __all__:
        from flowcore import api

        return getattr(api, name)
    raise AttributeError(f"module 'flowcore' has no attribute {name!r}")
