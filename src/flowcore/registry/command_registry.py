"""CommandRegistry: which commands exist, who added each, and how to load one.

Built-in commands come from ``flowcore.commands.BUILTIN_COMMANDS``; kit and plugin commands come
from the command manifest (``flowcore.registry.manifest``), which the PluginSystem rebuilds when the
config or an installed distribution changed. Listing never imports a command's module, nor
pluggy; running a kit or plugin command imports its owning plugin only (plus the plugins that
implement ``flow_before_command``/``flow_after_command``).

Duplicates are resolved once, when the manifest is built: built-in > kit > kit-bound or project
plugin > general plugin, and among equals the first loaded wins. The loser is skipped with a
warning naming both sources. ``buildkit``, ``plugin`` and ``config`` are always built-in.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from flowcore.plugins.registry_view import load_object
from flowcore.plugins.run import Run
from flowcore.registry.builtins import BUILTIN_COMMANDS

if TYPE_CHECKING:
    from pathlib import Path

    import click

    from flowcore.plugins.context import PluginContext
    from flowcore.plugins.system import PluginSystem
    from flowcore.registry.manifest import Failure, Manifest

class RunWithPlugins(Run, Protocol):
    """The run a CommandRegistry serves (flowcore.cli.app.Flow, from the layer above): options,
    config, and its PluginSystem, made on first use (help from the manifest never needs it)."""

    @property
    def plugins(self) -> PluginSystem: ...


BUILTIN = "built-in"
#: Built-in names no kit or plugin can ever take, whether or not the command exists yet.
RESERVED = frozenset({"buildkit", "plugin", "config"})
#: Lower wins when two sources register the same command name.
PRECEDENCE = {BUILTIN: 0, "kit": 1, "kit-plugin": 2, "project": 2, "general": 3}


class CommandInfo(NamedTuple):  # a NamedTuple: on every start, ~5x cheaper to define than a dataclass
    """What ``flow --help`` shows for one command, without loading it."""

    name: str
    help: str
    source: str


def _builtin_names() -> frozenset[str]:
    return RESERVED | frozenset(BUILTIN_COMMANDS)


class CommandRegistry:
    """The command tree of one run."""

    def __init__(self, flow: RunWithPlugins) -> None:
        self.flow = flow
        self._manifest: Manifest | None = None
        self._rebuilt = False
        self._reported: set[str] = set()  # failure and warning lines already shown
        self._live: dict[str, Any] = {}  # commands loaded in this process, by name
        self._contexts: dict[str, PluginContext] = {}

    # -- the manifest ----------------------------------------------------------------------

    def _key_and_fingerprint(self) -> tuple[str, list[Any]]:
        from flowcore.config.environment import env_dirs_for, site_packages_dir
        from flowcore.registry import manifest

        config = self.flow.config  # raises ConfigError when a config file is broken
        project = config.project if config.scope == "project" else None
        envs = env_dirs_for(config)
        load_plugins = os.environ.get("FLOW_LOAD_PLUGINS")
        key = "|".join([
            # an untrusted project loads none of its own plugins: another manifest
            f"project:{project.root}:{'trusted' if config.trusted else 'untrusted'}"
            if project else "global",
            f"kit:{config.active_kit}",
            f"load:{load_plugins}",
        ])
        files = [config.global_config.path] + ([project.file] if project else [])
        fingerprint = manifest.fingerprint(
            files, [site_packages_dir(e) for e in envs], load_plugins
        )
        return key, fingerprint

    def manifest(self) -> Manifest:
        """The manifest of this run: the cached one if still valid, else freshly built."""
        if self._manifest is None:
            from flowcore.registry import manifest

            key, fingerprint = self._key_and_fingerprint()
            self._manifest = manifest.load(key, fingerprint) or self._rebuild(key, fingerprint)
            from flowcore.config.unknown_keys import warn_kit_section

            warn_kit_section(self.flow.config, self._manifest.kit)  # the schema the manifest cached
        return self._manifest

    def _rebuild(self, key: str | None = None, fingerprint: list[Any] | None = None) -> Manifest:
        """Load every kit and plugin once and write what help and dispatch need."""
        from flowcore.registry import manifest as mf

        if key is None or fingerprint is None:
            key, fingerprint = self._key_and_fingerprint()
        previous = self._manifest or mf.load_stale(key)
        plugins = self._plugins()
        plugins.reset()
        plugins.load_all()
        kit = plugins.describe_kit()
        registrations = plugins.collect_commands()
        commands, warnings, live = _resolve(registrations)
        if previous is not None:
            _carry_failed_commands(previous, plugins.failures, {c.name for c in commands})
        built = mf.Manifest(
            key=key,
            fingerprint=fingerprint,
            kit=kit,
            plugins=[p.record(plugins.hooks_of(p)) for p in plugins.loaded.values()],
            commands=commands,
            failures=list(plugins.failures),
            warnings=warnings,
            env_dirs=[str(d) for d in plugins.env_dirs()],
        )
        mf.save(built)
        self._manifest = built
        self._rebuilt = True
        self._live = live
        for plugin in plugins.loaded.values():
            for command in (c for c in built.commands if c.source == plugin.name):
                self._contexts[command.name] = plugins.context(plugin)
        return built

    def refresh(self) -> Manifest:
        """Rebuild and save the manifest of this run's config, now that the command changed what
        is installed (``flow plugin add``/``delete``, ``flow buildkit add``/``delete``, after
        their change is committed): the next command finds it valid instead of rebuilding it.

        The kits and plugins are loaded here as that next command would load them (new ones
        passed the install's import check already), from the environments as they are now
        (``_forget_environments``). One that fails to load is reported as a warning, even with
        ``--strict-plugins``: the change stands, and the next command is strict about it.
        """
        _forget_environments(self.flow.plugins.env_dirs())
        self._manifest = None  # (this run's may have another key: buildkit add activates a kit)
        self._live, self._contexts = {}, {}
        built = self._rebuild()
        self._report_failures(strict=False)
        return built

    def _plugins(self) -> PluginSystem:
        plugins = self.flow.plugins
        if self._manifest is not None and self._manifest.kit and plugins.kit_info is None:
            plugins.kit_info = self._manifest.kit
        return plugins

    def _report_failures(self, *, strict: bool | None = None) -> None:
        """Show the manifest's failures and duplicate warnings (each once per run).

        With ``--strict-plugins`` a failure is a ``PluginLoadError`` instead.
        """
        if self._manifest is None or not (self._manifest.failures or self._manifest.warnings):
            return
        from flowcore._base.errors import warn

        strict = self.flow.options.strict_plugins if strict is None else strict
        for failure in self._manifest.failures:
            self._report_once(failure, strict)
        for warning in self._manifest.warnings:
            if warning not in self._reported:
                warn(warning)
                self._reported.add(warning)

    def _report_once(self, failure: Failure, strict: bool, where: str = "to load") -> None:
        from flowcore.plugins.system import failure_line, report

        line = "|".join(failure_line(failure, where))
        if line not in self._reported:
            self._reported.add(line)
            report(failure, strict, where)

    # -- listing and dispatch --------------------------------------------------------------

    def list(self) -> list[CommandInfo]:
        """Every command of this run, sorted by name. A broken config leaves only built-ins.

        Names, help and sources are made printable here (``flowcore._base.printable``), the one
        path from the manifest, which records what plugins said, to ``flow --help``, shell
        completion and the did-you-mean hints: a plugin's escape sequences never reach a
        terminal, whichever flowcore wrote the cached manifest.
        """
        from flowcore._base.errors import ConfigError

        infos = [CommandInfo(n, h, BUILTIN) for n, (_, h) in BUILTIN_COMMANDS.items()]
        try:
            manifest = self.manifest()
        except ConfigError:
            manifest = None  # the help epilog names the problem
        if manifest is not None:
            self._report_failures()
            infos += [CommandInfo(c.name, c.help, c.source) for c in manifest.commands]
            infos += [CommandInfo(n, f"(unavailable: it failed to load; see 'flow {n}')", f.name)
                      for f in manifest.failures for n in f.commands]
        if not all(f"{i.name}{i.help}{i.source}".isprintable() for i in infos):
            from flowcore._base.printable import printable_line

            infos = [CommandInfo(printable_line(i.name), printable_line(i.help),
                                 printable_line(i.source)) for i in infos]
        return sorted(infos, key=lambda i: i.name)

    def failed_command(self, name: str) -> Failure | None:
        """The kit or plugin that provides command ``name`` but failed to load, if any."""
        from flowcore._base.errors import ConfigError

        try:
            return self.manifest().failed_command(name)
        except ConfigError:
            return None

    def get(self, name: str) -> click.Command | None:
        """Load the command called ``name``, importing only what it needs.

        A cached manifest that names a module which no longer imports, or a plugin that no longer
        registers the command, triggers one rebuild and retry: stale data never runs wrong code.
        """
        if name in BUILTIN_COMMANDS:
            return load_object(BUILTIN_COMMANDS[name][0])  # type: ignore[return-value]
        if name in self._live:
            return self._live[name]
        manifest = self.manifest()
        record = manifest.command(name)
        if record is None and not self._rebuilt and manifest.failed_command(name) is None:
            manifest = self._rebuild()  # never let a stale cache hide a command
            record = manifest.command(name)
        if record is None:
            return None  # the caller explains (flowcore.cli.hints.no_such_command)
        self._report_failures()
        if name in self._live:
            return self._live[name]
        command = self._load_from_manifest(name, record.source)
        if command is None and not self._rebuilt:
            if self._rebuild().failed_command(name) is not None:
                return None  # reported as the reason this command cannot run
            self._report_failures()
            return self._live.get(name)
        return command

    def peek(self, name: str) -> click.Command | None:
        """The kit or plugin command ``name`` of this scope, loaded without reporting anything
        (the real dispatch reports), or ``None``: for reading its options before dispatch
        (global options given after the command, ``flowcore.cli.late_options``)."""
        record = self.manifest().command(name)
        return None if record is None else self._load_from_manifest(name, record.source)

    def _load_from_manifest(self, name: str, source: str) -> click.Command | None:
        manifest = self.manifest()
        plugin_record = manifest.plugin(source)
        if plugin_record is None:
            return None
        plugins = self._plugins()
        plugins.load_records([plugin_record], manifest.env_dirs)
        if source not in plugins.loaded:
            return None
        for plugin, command_name, command in plugins.collect_commands(only={source}):
            if command_name == name:
                self._live[name] = command
                self._contexts[name] = plugins.context(plugin)
                return command
        return None

    def context_of(self, name: str) -> PluginContext | None:
        """The context of the plugin that owns command ``name`` (after it was loaded)."""
        return self._contexts.get(name)

    # -- before/after every command --------------------------------------------------------

    def call_command_hook(self, hook: str, **kwargs: Any) -> None:
        """Call ``flow_before_command``/``flow_after_command`` on the plugins implementing it.

        Only those plugins are imported; with none, this costs one manifest lookup. Failures are
        reported as warnings (they never fail the command itself).
        """
        from flowcore._base.errors import ConfigError

        try:
            manifest = self.manifest()
        except ConfigError:
            return
        records = manifest.implementing(hook)
        if not records:
            return
        self._report_failures(strict=False)
        plugins = self._plugins()
        known = len(plugins.failures)
        plugins.load_records(records, manifest.env_dirs)
        loading = len(plugins.failures)
        plugins.call_loaded(hook, only={r.name for r in records}, report_now=False, **kwargs)
        for i, failure in enumerate(plugins.failures[known:], start=known):  # never strict
            self._report_once(failure, False, "to load" if i < loading else f"in {hook}")


def _carry_failed_commands(previous: Manifest, failures: list[Failure], taken: set[str]) -> None:
    """Give each failure the commands its kit or plugin had in ``previous`` (when it loaded, or
    carried over then), except names another source or a built-in provides now."""
    for i, failure in enumerate(failures):
        names = {c.name for c in previous.commands if c.source == failure.name}
        names.update(n for f in previous.failures if f.name == failure.name for n in f.commands)
        failures[i] = failure._replace(commands=tuple(sorted(names - taken - _builtin_names())))


def _resolve(
    registrations: list[tuple[Any, str, Any]],
) -> tuple[list[Any], list[str], dict[str, Any]]:
    """Apply precedence to every registration: winners as records, losers as warnings."""
    from flowcore.registry.manifest import CommandRecord

    winners: dict[str, tuple[Any, Any]] = {}
    warnings: list[str] = []

    def describe(plugin: Any) -> str:
        return f"{'build kit' if plugin.kind == 'kit' else 'plugin'} '{plugin.name}'"

    for plugin, name, command in registrations:
        if name in _builtin_names():
            warnings.append(
                f"{describe(plugin)} registers command '{name}', which is built-in and cannot be "
                f"overridden; skipped"
            )
            continue
        current = winners.get(name)
        if current is None:
            winners[name] = (plugin, command)
            continue
        holder = current[0]
        if PRECEDENCE[plugin.kind] < PRECEDENCE[holder.kind]:
            winners[name] = (plugin, command)
            holder, plugin = plugin, holder
        if holder is plugin:
            warnings.append(f"{describe(plugin)} registers command '{name}' twice; the first wins")
        else:
            warnings.append(
                f"command '{name}' of {describe(plugin)} is skipped: {describe(holder)} "
                f"already provides it"
            )
    records = [
        CommandRecord(name, command.get_short_help_str(limit=80), plugin.name, plugin.kind)
        for name, (plugin, command) in sorted(winners.items())
    ]
    live = {name: command for name, (_, command) in winners.items()}
    return records, warnings, live


def of_run() -> CommandRegistry:
    """The CommandRegistry of the running command, which ``cli.FlowGroup`` keeps in the click
    context (``flow.registry``)."""
    import click

    return click.get_current_context().find_root().meta["flow.registry"]


def _forget_environments(env_dirs: list[Path]) -> None:
    """Make this process import from the managed environments as a new process would: forget
    the modules it imported from them (an upgrade replaced their files), take them off
    ``sys.path`` (``add_to_sys_path`` puts them back and reads every ``.pth`` file, new ones
    too) and drop the import system's cached directory listings.

    An environment flow itself runs from (a project's ``.flow/env`` after the local hand-over)
    is left alone: its modules are flow's own.
    """
    import sys

    from flowcore.registry.manifest import own_site_packages

    own = os.path.join(os.path.realpath(own_site_packages()), "")
    roots = tuple({os.path.join(way(str(d)), "") for d in env_dirs
                   for way in (os.path.abspath, os.path.realpath)
                   if not own.startswith(os.path.join(os.path.realpath(d), ""))})
    if not roots:
        return
    sys.path[:] = [p for p in sys.path if not os.path.join(os.path.abspath(p), "").startswith(roots)]
    for name, module in list(sys.modules.items()):
        where = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or ())]
        if any(isinstance(w, str) and w.startswith(roots) for w in where):
            del sys.modules[name]
    importlib.invalidate_caches()
