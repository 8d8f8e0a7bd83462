"""PackageManager: installs, removes and checks kit and plugin distributions.

Callers pass requirements (a name, ``name>=1.2``, a directory, a wheel path) and nothing else:
the installer (uv, else pip) and the target (the flow-managed environment of the current
scope) are this module's business. Every change is a transaction:

1. lock the managed environment (so parallel ``flow`` processes take turns),
2. snapshot its distributions, run the installer,
3. check the result (entry points, ``FLOW_API``, requirements on flowcore's own packages),
4. on any failure, put the environment back as it was and raise,
5. only then write the config (the source of truth) and ``installed.json`` (where each package
   came from, so ``flow doctor --fix`` can rebuild the environment from the config).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowcore._base import paths
from flowcore._base import progress as _progress
from flowcore._base.errors import InstallError, UsageError
from flowcore.config import EffectiveConfig
from flowcore.config.environment import KIT_GROUP, PLUGIN_GROUP, canonical_name
from flowcore.packages.installer import (
    Dist,
    EnvSnapshot,
    Installer,
    InstallOptions,
    ManagedEnv,
    base_distributions,
    forget_record,
    read_record,
    unsatisfied_base_requirements,
    write_record,
)

KIT = "kit"
PLUGIN = "plugin"
_GROUP = {KIT: KIT_GROUP, PLUGIN: PLUGIN_GROUP}
_ADD = {KIT: "flow buildkit add", PLUGIN: "flow plugin add"}
_WHAT = {KIT: "build kit", PLUGIN: "plugin"}
_UNCHANGED = "The config and the flow environment are unchanged"


@dataclass(frozen=True, slots=True)
class InstalledPackage:
    """The outcome of installing one kit or plugin (``build_kits``: the kits a kit-bound plugin
    is bound to)."""

    name: str
    version: str
    kind: str
    build_kits: tuple[str, ...] = ()
    source: str = ""


@dataclass(slots=True)
class _Spec:
    """One requirement as given, what to pass the installer, and the name if known upfront."""

    given: str
    arg: str
    name: str | None
    is_dir: bool = False


def parse_spec(spec: str) -> _Spec:
    """Tell paths from requirements; fail early (one line) on a path that does not exist."""
    looks_like_path = (
        spec.endswith((".whl", ".tar.gz", ".zip")) or spec.startswith((".", "/", "~"))
        or os.sep in spec
    ) and "://" not in spec and "@" not in spec
    if looks_like_path:
        path = Path(spec).expanduser().absolute()
        if not path.exists():
            raise InstallError(f"cannot install {spec}: no such file or directory",
                               f"Check the path. {_UNCHANGED}")
        if path.is_file():
            if path.suffix != ".whl":
                return _Spec(spec, str(path), None)
            return _Spec(spec, str(path), _wheel_name(spec, path.name))
        return _Spec(spec, str(path), _project_name(path), is_dir=True)
    if "://" in spec and "@" not in spec.split("://")[0]:
        return _Spec(spec, spec, None)
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return _Spec(spec, spec, canonical_name(Requirement(spec).name))
    except InvalidRequirement as exc:
        raise UsageError(f"'{spec}' is neither a requirement nor an existing path",
                         "Pass a name (flow-plugin-x, flow-plugin-x>=1.0), a directory or a "
                         "wheel file") from exc


def _wheel_name(spec: str, filename: str) -> str:
    """The canonical distribution name of wheel ``filename``, as packaging reads it."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        return canonical_name(parse_wheel_filename(filename)[0])
    except InvalidWheelFilename as exc:
        raise InstallError(f"cannot install {spec}: {exc}", _UNCHANGED) from exc


def _project_name(directory: Path) -> str | None:
    import tomllib

    try:
        data = tomllib.loads((directory / "pyproject.toml").read_text(encoding="utf-8"))
        name = data.get("project", {}).get("name")
        return canonical_name(name) if isinstance(name, str) else None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None


class PackageManager:
    """Kits and plugins of one run, in the scope its config says (project or global)."""

    def __init__(self, config: EffectiveConfig) -> None:
        self.config = config
        self._installer: Installer | None = None

    # ------------------------------------------------------------------ environments

    @property
    def installer(self) -> Installer:
        if self._installer is None:
            self._installer = Installer()
        return self._installer

    @property
    def scope(self) -> str:
        return self.config.scope

    def env(self, scope: str | None = None) -> ManagedEnv:
        """The managed environment of ``scope`` (default: this run's scope)."""
        scope = scope or self.scope
        if scope == "project":
            assert self.config.project is not None
            return ManagedEnv(paths.project_env_dir(self.config.project.root), in_user_tree=True)
        return ManagedEnv(paths.global_env_dir())

    def installed_versions(self, scope: str = "global") -> dict[str, str]:
        """``{name: version}`` of every distribution in a managed environment."""
        return {n: d.version for n, d in self.env(scope).distributions().items()}

    # ------------------------------------------------------------------ adding

    def install_options(self, find_links: Sequence[str] = (),
                        no_index: bool = False) -> InstallOptions:
        """The command line's ``--find-links``/``--no-index`` with the configured package source
        (index URL, extra index URLs, find-links: flowcore.config.package_source) of this run."""
        source = self.config.package_source()
        links = [str(Path(f).expanduser().absolute()) for f in find_links]
        links += [link for link in source.find_links if link not in links]
        return InstallOptions(links, no_index, index_url=source.index_url,
                              extra_index_urls=list(source.extra_index_urls))

    def add_kits(self, specs: Sequence[str], find_links: Sequence[str] = (),
                 no_index: bool = False) -> list[InstalledPackage]:
        """Install kits into the global environment and mark them installed in the config.

        A kit already declared by a plugin keeps its plugins; the first kit becomes active.
        """
        env = self.env("global")
        options = self.install_options(find_links, no_index)
        with env.lock():
            results, snapshot = self.install_checked(env, specs, options, KIT)
            self._commit(env, results, snapshot, options, lambda: self.config.mark_kits_installed(
                [r.name for r in results]))
        return results

    def add_plugins(self, specs: Sequence[str], find_links: Sequence[str] = (),
                    no_index: bool = False) -> list[InstalledPackage]:
        """Install plugins into this scope's environment and add them to its config.

        Global scope: a plugin with ``FLOW_BUILD_KITS`` is bound to those kits (declaring the
        ones not in the config yet); any other is a general plugin. Project scope: added to
        ``[tool.flow] plugins``.
        """
        # A repository can commit a .flow/env whose bin/python is any program, and a package
        # source: flow runs pip there, or uses that source, only in a trusted project.
        self.config.require_trust("install plugins into it")
        env = self.env()
        options = self.install_options(find_links, no_index)
        with env.lock():
            results, snapshot = self.install_checked(env, specs, options, PLUGIN)
            self._commit(env, results, snapshot, options, lambda: self.config.bind_plugins(
                [(r.name, r.build_kits) for r in results]))
        return results

    def _commit(self, env: ManagedEnv, results: list[InstalledPackage],
                snapshot: EnvSnapshot | None, options: InstallOptions,
                write_config: Callable[[], Any]) -> None:
        """Write the config (and the install record); undo the install if that fails.

        A distribution the install left as it was (``flow plugin add NAME`` of an installed
        plugin: the installer found it satisfied) keeps its recorded source, so ``flow doctor
        --fix`` still reinstalls it from the directory or wheel it came from.
        """
        changed = snapshot.changed() if snapshot is not None else None
        try:
            write_config()
        except BaseException:
            self._rollback(env, snapshot)
            raise
        if snapshot is not None:
            snapshot.discard()
        record = read_record(env)
        for r in results:
            old = record.get(r.name)
            if changed is not None and r.name not in changed and isinstance(old, dict) \
                    and old.get("source"):
                record[r.name] = {**old, "version": r.version, "kind": r.kind}
                continue
            record[r.name] = {"version": r.version, "kind": r.kind, "source": r.source,
                              "findLinks": options.find_links, "noIndex": options.no_index}
        write_record(env, record)

    def install_checked(self, env: ManagedEnv, specs: Sequence[str], options: InstallOptions,
                        kind: str) -> tuple[list[InstalledPackage], EnvSnapshot | None]:
        """Install ``specs`` as ``kind`` into ``env`` and check them; all or nothing.

        Without touching the config: ``add_kits``/``add_plugins`` record the result, and
        ``flow doctor --fix`` reinstalls what the config already lists.

        Returns the installed packages and the snapshot of the environment taken before (None
        when the environment was created for this install), for a later rollback; the caller
        discards it once the change is committed.
        """
        if not specs:
            raise UsageError(f"no {_WHAT[kind]} given", f"Pass one: {_ADD[kind]} NAME")
        parsed = [parse_spec(s) for s in specs]
        base = base_distributions()
        for p in parsed:
            if p.name in base:
                raise InstallError(
                    f"{p.name} is part of flowcore's own environment "
                    f"(version {base[p.name].version}) and cannot be added as a {_WHAT[kind]}",
                    _UNCHANGED)
        if options.no_index and any(p.is_dir for p in parsed):
            # Isolated builds fetch the build backend from an index; offline, use flowcore's.
            options.build_isolation = False
        label = ", ".join(specs)
        created = not env.exists()
        with _progress.step(f"preparing the flow environment ({self.installer.name})"):
            env.ensure()
        snapshot = None if created else EnvSnapshot(env)
        try:
            with _progress.step(f"installing {label}"):
                self.installer.install(env, [p.arg for p in parsed], options, base,
                                       what=f"cannot install {label}", meanwhile=_warm_up)
            with _progress.step(f"checking {label}"):
                return self._check_installed(env, parsed, snapshot, base, kind), snapshot
        except BaseException as exc:
            self._rollback(env, snapshot)
            if isinstance(exc, InstallError) and not exc.fix:
                exc.fix = _UNCHANGED
            raise

    def _check_installed(self, env: ManagedEnv, parsed: list[_Spec],
                         snapshot: EnvSnapshot | None, base: dict[str, Dist],
                         kind: str) -> list[InstalledPackage]:
        from flowcore.packages.probe import api_problem, read_declarations

        after = env.distributions()
        rewritten = snapshot.changed() if snapshot is not None else set(after)
        changed = [d for n, d in after.items() if n in rewritten]
        conflicts = unsatisfied_base_requirements(changed, base)
        if conflicts:
            raise InstallError("; ".join(conflicts),
                               f"Use a version that works with this flowcore. {_UNCHANGED}")
        targets: list[tuple[_Spec, Dist]] = []
        for p in parsed:
            if p.name is not None:
                if p.name not in after:
                    raise InstallError(f"cannot install {p.given}: the installer did not install "
                                       f"{p.name}")
                targets.append((p, after[p.name]))
            else:
                found = [d for d in changed if d.groups & {KIT_GROUP, PLUGIN_GROUP}]
                if not found:
                    raise InstallError(f"{p.given} contains no flow {_WHAT[kind]} (no "
                                       f"{_GROUP[kind]} entry point)")
                targets += [(p, d) for d in found]
        group = _GROUP[kind]
        values: list[str] = []
        for p, dist in targets:
            if group not in dist.groups:
                other = KIT if kind == PLUGIN else PLUGIN
                if _GROUP[other] in dist.groups:
                    raise InstallError(f"{dist.name} is a {_WHAT[other]}, not a {_WHAT[kind]}",
                                       f"Use: {_ADD[other]} {p.given}. {_UNCHANGED}")
                raise InstallError(
                    f"{dist.name} is not a flow {_WHAT[kind]}: it has no {group} entry point",
                    f"Add one to its pyproject.toml ([project.entry-points.\"{group}\"]). "
                    f"{_UNCHANGED}")
            values += [v for g, _, v in dist.entry_points if g == group]

        names = {v: dist.name for _, dist in targets for g, _, v in dist.entry_points if g == group}
        declared = read_declarations(env, values, check_hooks=True, names=names,
                                     kit_dirs=[self.env("global").site_packages])
        results: list[InstalledPackage] = []
        for p, dist in targets:
            kits: list[str] = []
            for g, _, value in dist.entry_points:
                if g != group:
                    continue
                decl = declared[value]
                if decl.error:
                    raise InstallError(f"{dist.name} cannot be imported ({value}): {decl.error}")
                problem = api_problem(dist.name, decl.api)
                if problem:
                    raise InstallError(problem, f"Install a version of {dist.name} made for "
                                       f"plugin API {_api()}. {_UNCHANGED}")
                if decl.hook_error:  # what loading it would refuse (flowcore.plugins.hookcheck)
                    raise InstallError(
                        f"{dist.name} implements a hook wrongly: {decl.hook_error}",
                        "Take only arguments the hook's specification lists (docs/hooks.md, or "
                        f"its kit's hook reference). {_UNCHANGED}")
                if decl.undeclared:
                    from flowcore.plugins.hookcheck import warn_undeclared

                    warn_undeclared(dist.name, decl.undeclared, decl.build_kits or ())
                kits += [canonical_name(k) for k in decl.build_kits or () if canonical_name(k) not in kits]
            results.append(InstalledPackage(dist.name, dist.version, kind,
                                            tuple(kits) if kind == PLUGIN else (),
                                            p.arg if p.arg != p.given or p.name is None
                                            else p.given))
        return results

    def _rollback(self, env: ManagedEnv, snapshot: EnvSnapshot | None) -> None:
        """Put ``env`` back exactly as it was: the snapshot's files, or nothing at all when the
        environment was created for this install."""
        if snapshot is None:
            import shutil

            shutil.rmtree(env.root, ignore_errors=True)
            return
        try:
            snapshot.restore()
        except OSError as exc:
            raise InstallError(f"cannot restore the flow environment at {env.root}: {exc}",
                               "Run: flow doctor --fix") from exc

    # ------------------------------------------------------------------ deleting

    def delete_kits(self, names: Sequence[str]) -> list[str]:
        """Uninstall kits; a kit with bound plugins stays declared so they stay bound."""
        env = self.env("global")
        with env.lock():
            installed = self.config.global_config.installed_kits
            wanted = self._check_known(names, installed, KIT)
            with _progress.step(f"removing {', '.join(wanted)}"):
                self.installer.uninstall(env, wanted)
            self.config.remove_kits(wanted)
            forget_record(env, wanted)
        return wanted

    def delete_plugins(self, names: Sequence[str]) -> list[str]:
        """Uninstall plugins and remove them from every kit and plugin list of this scope."""
        self.config.require_trust("remove plugins from it")
        env = self.env()
        with env.lock():
            wanted = self._check_known(names, self.config.configured_plugins, PLUGIN)
            with _progress.step(f"removing {', '.join(wanted)}"):
                self.installer.uninstall(env, wanted)
            self.config.unbind_plugins(wanted)
            forget_record(env, wanted)
        return wanted

    def _check_known(self, names: Sequence[str], known: list[str], kind: str) -> list[str]:
        wanted: list[str] = []
        known = [canonical_name(k) for k in known]
        for name in names:
            n = canonical_name(name)
            if n not in known:
                listing = ", ".join(known) if known else "none"
                raise InstallError(
                    f"{_WHAT[kind]} '{name}' is not installed"
                    + (" in this project" if kind == PLUGIN and self.scope == "project" else ""),
                    f"Installed {_WHAT[kind]}s: {listing}")
            if n not in wanted:
                wanted.append(n)
        return wanted

    # ------------------------------------------------------------------ doctor

    def expected(self) -> dict[str, dict[str, str]]:
        """``{scope: {name: kind}}``: what the config says each environment must hold."""
        g = self.config.global_config
        glob: dict[str, str] = {canonical_name(k): KIT for k in g.installed_kits}
        for name in g.all_plugins:
            glob.setdefault(canonical_name(name), PLUGIN)
        out = {"global": glob}
        if self.scope == "project" and self.config.trusted:
            out["project"] = {canonical_name(p): PLUGIN for p in self.config.configured_plugins}
        return out


def _warm_up() -> None:
    """Imports the rest of an install needs, made while the installer runs instead of after it:
    the probe (flowcore.packages.probe), packaging's specifiers (the FLOW_API and requirement
    checks), tempfile, and what the command manifest's refresh after the commit needs (``flow
    plugin add`` loads every plugin then): the PluginSystem, pluggy with flow's markers and hook
    specs, which almost every plugin imports (``from flowcore import hookimpl``). Only modules
    of the layers below (flowcore.api, above, is small)."""
    import tempfile  # noqa: F401 - the config and the install record are written through it

    import packaging.requirements  # noqa: F401 - the checks after the install use both
    import packaging.specifiers  # noqa: F401

    import flowcore.packages.probe
    import flowcore.plugins.distinfo
    import flowcore.plugins.hookspecs
    import flowcore.plugins.markers
    import flowcore.plugins.system  # noqa: F401


# ---------------------------------------------------------------------- install record

def _api() -> str:
    from flowcore._base.version import FLOW_API_VERSION

    return FLOW_API_VERSION


__all__ = ["InstalledPackage", "PackageManager", "parse_spec"]
