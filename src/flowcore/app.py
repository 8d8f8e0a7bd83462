"""The core instance handed to built-in commands: config, packages, plugins, commands, logger.

Each part is created on first use, so a command pays only for what it touches: ``flow config``
never builds a PackageManager, and ``flow --help`` never imports pluggy.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING

from flowcore.config import EffectiveConfig, RunOptions, load_effective

if TYPE_CHECKING:
    import logging
    from pathlib import Path

    from flowcore.packages import PackageManager
    from flowcore.plugins import PluginSystem


class Flow:
    """One run of ``flow``. Built by the root command from its global options."""

    def __init__(self, options: RunOptions, cwd: str | os.PathLike[str] | None = None) -> None:
        self.options = options
        # A string: the start-up path does not import pathlib (see flowcore.paths).
        self.cwd_str = os.fspath(cwd) if cwd is not None else os.getcwd()

    @cached_property
    def cwd(self) -> Path:
        from pathlib import Path

        return Path(self.cwd_str)

    @cached_property
    def logger(self) -> logging.Logger:
        import logging

        return logging.getLogger("flow")

    @cached_property
    def config(self) -> EffectiveConfig:
        """Both config files, validated; raises ``ConfigError`` on the first access if broken."""
        config = load_effective(self.options, self.cwd_str)
        if _has_unknown_keys(config):
            from flowcore._hints import warn_unknown_keys

            warn_unknown_keys(config)
        return config

    @cached_property
    def packages(self) -> PackageManager:
        from flowcore.packages import PackageManager

        return PackageManager(self.config)

    @cached_property
    def plugins(self) -> PluginSystem:
        from flowcore.plugins import PluginSystem

        return PluginSystem(self)


#: What the global config (top level, ``buildKits[]`` entries) and ``[tool.flow]`` may hold
#: without a second look (the rest is checked by ``flowcore._hints.warn_unknown_keys``).
_PLAIN_GLOBAL = frozenset({"schemaVersion", "activeBuildKit", "buildKits", "plugins",
                           "lastUpdateDate", "latestVersion", "kitConfig", "pluginConfig"})


def _has_unknown_keys(config: EffectiveConfig) -> bool:
    """A cheap pre-check on every start: anything beyond the keys flow knows at once (the
    package source keys, and a project's tables named after its kits' and plugins' short
    names, included)."""
    from flowcore import config as config_module

    data = config.global_config.data
    known_global = _PLAIN_GLOBAL | set(getattr(config_module, "_SOURCE_KEYS_GLOBAL", ()))
    if any(k not in known_global for k in data):
        return True
    if any(set(kit) - {"name", "installed", "plugins"} for kit in data.get("buildKits", ())):
        return True
    project = config.project
    if project is None:
        return False
    g = config.global_config
    known: set[str] = {*config_module.PROJECT_KEYS,
                       *getattr(config_module, "_SOURCE_KEYS_PROJECT", ())}
    for name in (*g.installed_kits, *g.all_plugins, *project.plugins):
        for prefix in ("flow-kit-", "flow-plugin-"):  # short names, as flowcore.context has them
            if name.startswith(prefix) and len(name) > len(prefix):
                name = name[len(prefix):]
                break
        known.add(name)
    return any(k not in known for k in project.data)
