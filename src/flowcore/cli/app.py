"""The core instance handed to built-in commands: config, packages, plugins, commands, logger.

Each part is created on first use, so a command pays only for what it touches: ``flow config``
never builds a PackageManager, and ``flow --help`` never imports pluggy.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flowcore.config import EffectiveConfig, RunOptions, load_effective
from flowcore.config.unknown_keys import has_unknown_keys, warn_unknown_keys

if TYPE_CHECKING:
    import logging

    from flowcore.packages.manager import PackageManager
    from flowcore.plugins.system import PluginSystem


class Flow:
    """One run of ``flow``. Built by the root command from its global options."""

    def __init__(self, options: RunOptions, cwd: str | os.PathLike[str] | None = None) -> None:
        self.options = options
        self.cwd = Path(cwd) if cwd is not None else Path.cwd()

    @cached_property
    def logger(self) -> logging.Logger:
        import logging

        return logging.getLogger("flow")

    @cached_property
    def config(self) -> EffectiveConfig:
        """Both config files, validated; raises ``ConfigError`` on the first access if broken."""
        config = load_effective(self.options, self.cwd)
        if has_unknown_keys(config):  # the cheap check; difflib only past it
            warn_unknown_keys(config)
        return config

    @cached_property
    def packages(self) -> PackageManager:
        from flowcore.packages.manager import PackageManager

        return PackageManager(self.config)

    @cached_property
    def plugins(self) -> PluginSystem:
        from flowcore.plugins.system import PluginSystem

        return PluginSystem(self)


def truthy_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def flow_of(ctx: click.Context) -> Flow:
    """This run's core instance, made once from the global options.

    Help is eager and click resolves the sub-command before the root callback runs, so the
    first of them to need it makes it, from the options parsed so far.
    """
    flow = ctx.find_object(Flow)
    if flow is None:
        flow = flow_from_params({**ctx.meta.get("flow.early_params", {}), **ctx.params})
        ctx.find_root().obj = flow
        if flow.options.debug:
            import logging

            logging.basicConfig(level=logging.DEBUG, format="flow: debug: %(message)s")
    return flow


def flow_from_params(params: dict[str, Any]) -> Flow:
    if params.get("root") or params.get("config"):
        from pathlib import Path  # only then: the start-up path does without (flowcore._base.paths)
    return Flow(
        RunOptions(
            debug=bool(params.get("debug")),
            global_scope=bool(params.get("global_scope")),
            build_kit=params.get("build_kit"),
            check_latest=not params.get("no_check_latest"),
            root=Path(params["root"]) if params.get("root") else None,
            config=Path(params["config"]) if params.get("config") else None,
            strict_plugins=bool(params.get("strict_plugins")) or truthy_env("FLOW_STRICT_PLUGINS"),
        )
    )
