"""What to tell someone whose command, key or kit name flow does not know.

Only imported on the way to an error or a warning (never by a command that works): it may load
other scopes' manifests, which imports the kits and plugins of those scopes. The nearest name to
a misspelt one comes from ``flowcore._base.suggest``; unknown config keys are warned about by
``flowcore.config.unknown_keys``.

* :func:`no_such_command`: the error for an unknown top-level command: the command of a kit or
  plugin that failed to load (which one, why, the fix); a command that a known kit or plugin
  provides outside this scope (which one, and how to get it here: ``flow -k KIT NAME`` only
  when that kit takes this project); else a did-you-mean over every command of this scope.
* :func:`add_command`: how to install a kit or plugin again: from the source ``installed.json``
  recorded for it, else ``PATH-OR-NAME`` with a note (never a name no index may have).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from flowcore._base.errors import ConfigError, FlowError, PluginLoadError, UsageError
from flowcore._base.suggest import closest, did_you_mean

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from flowcore.cli.app import Flow
    from flowcore.config import EffectiveConfig
    from flowcore.plugins.records import CommandRecord, Failure
    from flowcore.registry.command_registry import CommandRegistry


#: An install hint's source when nothing records where the kit or plugin came from.
ANY_SOURCE = "PATH-OR-NAME (a directory, a wheel, or a name from your configured index)"
_ANY_NOTE = "a directory, a wheel, or a name from your configured index"


def add_command(add: str, name: str, project: Path | None = None) -> str | None:
    """``add`` (``flow plugin add`` or ``flow buildkit add``) with the source, find-links and
    ``--no-index`` that ``installed.json`` recorded for ``name`` (a path shown relative to the
    working directory when it is under it), or ``None`` when nothing usable is recorded.

    ``project``: a trusted project whose own environment's record is looked at first.
    """
    import shlex

    from flowcore._base import paths
    from flowcore.packages.installer import ManagedEnv, read_record

    envs = [ManagedEnv(paths.project_env_dir(project))] if project is not None else []
    for env in [*envs, ManagedEnv(paths.global_env_dir())]:
        rec = read_record(env).get(name)
        source = rec.get("source") if isinstance(rec, dict) else None
        if not isinstance(source, str) or not source.strip():
            continue
        if os.path.isabs(source):
            if not os.path.exists(source):
                return None  # moved or deleted: it cannot be installed from there again
            source = paths.shown(source)
        assert isinstance(rec, dict)
        words = [source]
        for link in rec.get("findLinks") or []:
            if isinstance(link, str) and link:
                words += ["--find-links", paths.shown(link) if os.path.isabs(link) else link]
        if rec.get("noIndex") is True:
            words.append("--no-index")
        return " ".join([add, *(shlex.quote(w) for w in words)])
    return None


def install_kit_fix(kit: str) -> str:
    """The fix for a kit that is not installed: its recorded source, else PATH-OR-NAME."""
    return f"Install it with: {add_command('flow buildkit add', kit) or 'flow buildkit add ' + ANY_SOURCE}"


def broken_command(name: str, failure: Failure, project: Path | None = None) -> PluginLoadError:
    """The error for running a command whose kit or plugin failed to load (``project``: the
    trusted project whose environment holds its plugins)."""
    from flowcore.plugins.system import NOT_INSTALLED

    if failure.kind == "kit":
        what, add, delete = "build kit", "flow buildkit add", "flow buildkit delete"
    else:
        what, add, delete = "plugin", "flow plugin add", "flow plugin delete"
    cause = (f"command '{name}' cannot run: its {what} '{failure.name}' failed to load: "
             f"{failure.cause}")
    if failure.cause == NOT_INSTALLED:
        return PluginLoadError(cause, f"Reinstall it with: flow doctor --fix (or, to stop "
                                      f"using it: {delete} {failure.name})")
    recorded = add_command(add, failure.name, project if failure.kind == "project" else None)
    reinstall = (f"{recorded}, or flow doctor --fix" if recorded else
                 f"flow doctor --fix, or {add} PATH-OR-NAME: {_ANY_NOTE}")
    return PluginLoadError(cause, f"See what is wrong with: flow doctor; reinstall it "
                                  f"({reinstall}), or remove it: {delete} {failure.name}")


def no_such_command(flow: Flow, registry: CommandRegistry, name: str) -> FlowError:
    """The error for ``flow NAME`` when no command of this scope is called ``NAME``."""
    failure = registry.failed_command(name)
    config = flow.config
    if failure is not None:
        trusted = config.project if config.scope == "project" and config.trusted else None
        return broken_command(name, failure, trusted.root if trusted is not None else None)
    kit = require_kit(config)  # a configured kit that is not installed is the real cause
    here = [info.name for info in registry.list()]
    elsewhere, declined = _provided_elsewhere(flow, name)
    if elsewhere is not None:
        return _elsewhere_error(flow, name, *elsewhere)
    failed = [f for f in registry.manifest().failures if not f.commands]
    also = ""
    if failed:
        names = ", ".join(f"'{f.name}'" for f in failed)
        also = (f" ({names} failed to load, so {'its' if len(failed) == 1 else 'their'} "
                "commands are not known; see 'flow doctor')")
    suggestion = did_you_mean(name, here)
    if kit is None and not suggestion and not failed:
        return UsageError(
            f"no such command '{name}', and no build kit is active (kits add commands such as "
            f"build, test and publish){also}",
            "See 'flow --help' for the commands there are, or install a kit: "
            f"flow buildkit add {ANY_SOURCE}",
        )
    if declined and config.project is not None:
        from flowcore.plugins.kit_info import files_text

        others = "; ".join(f"build kit {k} has it, but takes only a folder with {files_text(f)}"
                           for k, f in declined)
        return UsageError(f"no such command '{name}' in project {config.project.root} (build kit "
                          f"{kit or 'none'}; {others}){also}",
                          f"{suggestion}See 'flow --help' for the commands there are")
    return UsageError(f"no such command '{name}'{also}",
                      f"{suggestion}See 'flow --help' for the commands there are")


def _provided_elsewhere(
    flow: Flow, name: str,
) -> tuple[tuple[CommandRecord, str, list[str] | None] | None, list[tuple[str, list[str] | None]]]:
    """A kit or kit-bound plugin outside this scope that provides ``name``, its kit and the
    files that kit takes a project by; and the kits that provide ``name`` themselves but do not
    take this project (so ``flow -k KIT NAME`` would fail here), with their files.

    Looks at the global scope of every installed kit (its manifest, cached like any other)
    except the one this run already is: another kit's own commands, and the plugins bound to
    a kit in the global config (which a project does not load).
    """
    from flowcore.cli.app import Flow
    from flowcore.config import RunOptions
    from flowcore.plugins.kit_info import accepts, declared_files
    from flowcore.registry.command_registry import CommandRegistry

    config = flow.config
    project = config.project if config.scope == "project" else None
    declined: list[tuple[str, list[str] | None]] = []
    for kit in config.global_config.installed_kits:
        if config.scope == "global" and kit == config.active_kit:
            continue
        options = RunOptions(global_scope=True, build_kit=kit, check_latest=False,
                             root=flow.options.root, config=flow.options.config)
        try:
            manifest = CommandRegistry(Flow(options, cwd=flow.cwd)).manifest()
        except FlowError:
            continue
        record = manifest.command(name)
        if record is None or record.kind not in ("kit", "kit-plugin"):
            continue
        if record.kind == "kit" and kit == config.active_kit:
            continue  # this project's own kit: it would be here
        files = declared_files(manifest.kit)
        if record.kind == "kit" and project is not None and not accepts(files, project.root):
            declined.append((kit, files))  # flow -k KIT NAME would run it on a project it refuses
            continue
        return (record, kit, files), declined
    return None, declined


def _elsewhere_error(flow: Flow, name: str, record: CommandRecord, kit: str,
                     files: list[str] | None) -> UsageError:
    from flowcore.plugins.kit_info import accepts

    config = flow.config
    project = config.project if config.scope == "project" else None
    active = config.active_kit
    if project is not None:
        where = f"in project {project.root} (build kit {active or 'none'})"
    elif active:
        where = f"with build kit {active}"
    else:
        where = "(no build kit is active)"
    if record.kind == "kit":
        provider = f"build kit {kit} provides it"
    else:
        provider = f"plugin {record.source} provides it, bound to build kit {kit}"
    if record.kind == "kit-plugin" and project is not None:
        add = add_command("flow plugin add", record.source) or f"flow plugin add {ANY_SOURCE}"
        fix = f"A project loads only its own plugins: add it to this one with: {add}"
        if kit != active:
            fix += f" (it is made for build kit {kit})"
        if accepts(files, flow.cwd):  # run outside the project, its kit sees this folder
            fix += f", or run it outside the project: flow -g -k {kit} {name}"
        return UsageError(f"no such command '{name}' {where}: {provider}", fix)
    whose = "this project's kit" if project is not None else "the active kit"
    return UsageError(
        f"no such command '{name}' {where}: {provider}",
        f"Run it with: flow -k {kit} {name}, or make {kit} {whose}: flow buildkit switch {kit}",
    )


# -- unknown keys in the config files ---------------------------------------------------------

def require_kit(config: EffectiveConfig) -> str | None:
    """The active kit, checked to be installed; ``None`` when no kit is active at all. A kit
    the config names but that is not installed is a ``ConfigError`` naming where it was named
    and the fix (its recorded source, or the installed kit it is a typo of)."""
    kit, origin = config.active_kit_and_origin()
    if kit is None:
        return None
    entry = config.global_config.kit(kit)
    if entry is None or not entry.installed:
        raise ConfigError(f"build kit '{kit}' (from {origin}) is not installed",
                          missing_kit_fix(kit, config.global_config.installed_kits))
    return kit


def missing_kit_fix(kit: str, installed: list[str], use: str = "") -> str:
    """The fix for a kit name that is not installed: the installed kit it is probably a typo
    of (``use`` formats the command that uses it), else how to install it."""
    from flowcore.config.environment import short_name_of

    # compared without the common 'flow-kit-' prefix, which makes every kit name look alike
    shorts = {short_name_of(k): k for k in installed}
    short = closest(short_name_of(kit), shorts)
    match = shorts[short] if short is not None else None
    if match is None:
        return install_kit_fix(kit)
    how = f" Use it with: {use.format(match)}" if use else ""
    return f"Did you mean '{match}'?{how} (installed build kits: {', '.join(installed)})"


def warn_unasked_answers(answers: Mapping[str, object], asked: set[str], template: str) -> None:
    """Warn about each ``--data KEY=VALUE`` whose key the template does not ask, naming the
    nearest question it does ask."""
    from flowcore._base.errors import warn

    for key in sorted(set(answers) - asked):
        match = closest(key, asked)
        fix = f"Did you mean '{match}'?" if match else (
            f"It asks: {', '.join(sorted(asked))}" if asked else "It asks no questions")
        warn(f"template {template} does not ask '{key}' (from --data {key}=...)", fix)
