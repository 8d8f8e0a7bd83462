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
        from flowcore.paths import as_path

        return as_path(self.cwd_str)

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


def _has_unknown_keys(config: EffectiveConfig) -> bool:
    """A cheap pre-check on every start (``flowcore._hints`` is imported only past it): any key
    beyond those flow knows, and beyond a project's tables named after its kits' and plugins'
    short names."""
    from flowcore.config import GLOBAL_KEYS, KIT_ENTRY_KEYS, PROJECT_KEYS
    from flowcore.environment import short_name_of

    data = config.global_config.data
    if any(k not in GLOBAL_KEYS for k in data):
        return True
    if any(set(kit) - KIT_ENTRY_KEYS for kit in data.get("buildKits", ())):
        return True
    project = config.project
    if project is None:
        return False
    g = config.global_config
    known = PROJECT_KEYS | {short_name_of(n)
                            for n in (*g.installed_kits, *g.all_plugins, *project.plugins)}
    return any(k not in known for k in project.data)
