"""PluginSystem: the pluggy PluginManager, discovery, load order, contexts and isolation.

What loads (architecture notes, section 4): the active kit first (``-k`` wins, then the project's
``buildkit`` inside a project, else the global ``activeBuildKit``), then the kit-bound plugins
(global scope) or the project's plugins (project scope), then the general plugins.
``FLOW_LOAD_PLUGINS=a,b`` keeps only the named plugins and ``FLOW_LOAD_PLUGINS=`` none; it never
drops the kit. Only distributions named in the config are loaded, through their ``flow.kits`` and
``flow.plugins`` entry points.

Isolation: a kit or plugin that fails to import, fails validation or raises inside a hook is
recorded as a :class:`~flowcore.manifest.Failure`, reported in one line naming it and the fix,
and skipped; ``--strict-plugins`` / ``FLOW_STRICT_PLUGINS=1`` turn the report into a
``PluginLoadError``.

This module is only imported when a plugin has to be loaded (never by ``flow --help``); pluggy
and ``importlib.metadata`` are imported inside the functions that need them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flowcore.environment import canonical_name
from flowcore.context import CoreContext, KitContext, short_name_of
from flowcore.errors import PluginLoadError
from flowcore.manifest import Failure, PluginRecord, file_stamp

if TYPE_CHECKING:
    import pluggy

    from flowcore.app import Flow

ENTRY_POINT_GROUPS = ("flow.kits", "flow.plugins")
#: Hooks that wrap every command; plugins implementing them are loaded on every dispatch.
COMMAND_HOOKS = ("flow_before_command", "flow_after_command")


def load_plugins_filter() -> set[str] | None:
    """The ``FLOW_LOAD_PLUGINS`` selection: ``None`` when unset, else the normalised names."""
    value = os.environ.get("FLOW_LOAD_PLUGINS")
    if value is None:
        return None
    return {canonical_name(n) for n in value.split(",") if n.strip()}


def failure_line(failure: Failure, where: str = "to load") -> tuple[str, str]:
    """``(cause, fix)`` of the one-line report for a failed kit or plugin."""
    what = "build kit" if failure.kind == "kit" else "plugin"
    command = "buildkit" if failure.kind == "kit" else "plugin"
    return (
        f"{what} '{failure.name}' failed {where}: {failure.cause}",
        f"Remove it with: flow {command} delete {failure.name}",
    )


def report(failure: Failure, strict: bool, where: str = "to load") -> None:
    """Warn about ``failure`` on stderr, or raise ``PluginLoadError`` when strict."""
    cause, fix = failure_line(failure, where)
    if strict:
        raise PluginLoadError(cause, f"{fix} (or run without --strict-plugins)")
    click.echo(f"flow: warning: {cause}. {fix}", err=True)


class LoadedPlugin:
    """A kit or plugin registered with the PluginManager in this process.

    ``kind`` is "kit", "kit-plugin", "project" or "general"; ``files`` are the stamps of its
    module files (see ``manifest.file_stamp``).
    """

    def __init__(self, name: str, kind: str, entry_points: list[str]) -> None:
        self.name = name
        self.kind = kind
        self.entry_points = entry_points
        self.objects: list[Any] = []
        self.pm_names: list[str] = []
        self.files: list[str] = []
        self.context: CoreContext | None = None

    def record(self, hooks: list[str]) -> PluginRecord:
        return PluginRecord(self.name, self.kind, self.entry_points, sorted(hooks), list(self.files))


class PluginSystem:
    """The kits and plugins of one run, loaded on demand."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.reset()

    def reset(self) -> None:
        """Forget everything loaded so far (used before rebuilding the manifest)."""
        self._pm: pluggy.PluginManager | None = None
        self.loaded: dict[str, LoadedPlugin] = {}
        self.failures: list[Failure] = []
        self._owner: dict[str, LoadedPlugin] = {}
        self.kit_info: dict[str, Any] | None = None
        self._all_loaded = False

    # -- what to load ----------------------------------------------------------------------

    @property
    def strict(self) -> bool:
        return self.flow.options.strict_plugins

    def active_kit(self) -> str | None:
        """The kit to load, if it is active and marked installed (else its commands are absent)."""
        config = self.flow.config
        kit = config.active_kit
        entry = config.global_config.kit(kit) if kit else None
        return kit if entry is not None and entry.installed else None

    def plan(self) -> list[tuple[str, str]]:
        """``(distribution name, kind)`` of every kit and plugin to load, in load order."""
        config = self.flow.config
        out: list[tuple[str, str]] = []
        kit = self.active_kit()
        if kit:
            out.append((kit, "kit"))
        selected = load_plugins_filter()
        for ref in config.plugins_to_load:
            if selected is not None and canonical_name(ref.name) not in selected:
                continue
            kind = "kit-plugin" if ref.kind == "kit" else ref.kind
            if all(canonical_name(ref.name) != canonical_name(n) for n, _ in out):
                out.append((ref.name, kind))
        return out

    def env_dirs(self) -> list[Path]:
        """Managed environments whose packages this run can import: project's first, global."""
        from flowcore.environment import env_dirs_for

        return env_dirs_for(self.flow.config)

    def _activate_envs(self, env_dirs: list[Path] | None = None) -> None:
        from flowcore.environment import add_to_sys_path

        for env_dir in env_dirs if env_dirs is not None else self.env_dirs():
            add_to_sys_path(Path(env_dir))

    # -- loading ---------------------------------------------------------------------------

    @property
    def pm(self) -> pluggy.PluginManager:
        if self._pm is None:
            import pluggy

            from flowcore import hookspecs

            self._pm = pluggy.PluginManager("flow")
            self._pm.add_hookspecs(hookspecs)
        return self._pm

    def load_all(self) -> list[LoadedPlugin]:
        """Discover and load every kit and plugin of this run (the slow path: metadata scan)."""
        if self._all_loaded:
            return list(self.loaded.values())
        self._all_loaded = True
        self._activate_envs()
        from importlib.metadata import distributions

        for name, kind in self.plan():
            if name in self.loaded or any(f.name == name for f in self.failures):
                continue
            dist = next(iter(distributions(name=name)), None)
            if dist is None:
                self._fail(name, kind, "it is not installed in the flow environment")
                continue
            values = [ep.value for ep in dist.entry_points if ep.group in ENTRY_POINT_GROUPS]
            if not values:
                self._fail(name, kind, "it declares no 'flow.kits' or 'flow.plugins' entry point")
                continue
            self._load(name, kind, values, check_api=True)
        return list(self.loaded.values())

    def load_records(self, records: list[PluginRecord], env_dirs: list[str]) -> None:
        """Load plugins named by a cached manifest, without scanning any metadata.

        They passed the API check when the manifest was built, and any upgrade since would have
        changed the manifest's fingerprint, so the check is not repeated here.
        """
        self._activate_envs([Path(d) for d in env_dirs])
        failed = {f.name for f in self.failures}
        for record in records:
            if record.name not in self.loaded and record.name not in failed:
                self._load(record.name, record.kind, record.entry_points)

    def _load(
        self, name: str, kind: str, values: list[str], *, check_api: bool = False
    ) -> LoadedPlugin | None:
        from flowcore.registry import load_object

        plugin = LoadedPlugin(name, kind, values)
        try:
            for value in values:
                target = value.split("[", 1)[0].strip()
                obj = load_object(target)
                plugin.objects.append(obj)
                module = sys.modules.get(target.partition(":")[0])
                source = getattr(module, "__file__", None)
                if source:
                    plugin.files.append(file_stamp(source))
                if check_api:
                    self._check_api(obj)
        except PluginLoadError as exc:
            self._fail(name, kind, exc.cause)
            return None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - isolation is the point
            self._fail(name, kind, f"{type(exc).__name__}: {exc}")
            return None
        if not self._register(plugin):
            return None
        self.loaded[name] = plugin
        return plugin

    @staticmethod
    def _check_api(obj: Any) -> None:
        spec = getattr(obj, "FLOW_API", None)
        if spec is None:
            return
        from packaging.specifiers import SpecifierSet

        from flowcore import FLOW_API_VERSION

        if FLOW_API_VERSION not in SpecifierSet(str(spec)):
            raise PluginLoadError(
                f"it needs flow plugin API {spec}, this flowcore provides {FLOW_API_VERSION}"
            )

    def _register(self, plugin: LoadedPlugin) -> bool:
        import pluggy

        pm = self.pm
        try:
            for i, obj in enumerate(plugin.objects):
                pm_name = plugin.name if i == 0 else f"{plugin.name}#{i}"
                pm.register(obj, name=pm_name)
                plugin.pm_names.append(pm_name)
                for caller in pm.get_hookcallers(obj) or []:
                    if not caller.has_spec() and not any(
                        i.optionalhook for i in caller.get_hookimpls() if i.plugin is obj
                    ):
                        raise pluggy.PluginValidationError(
                            obj, f"it implements an unknown hook '{caller.name}'"
                        )
        except (pluggy.PluginValidationError, ValueError) as exc:
            for pm_name in plugin.pm_names:
                pm.unregister(name=pm_name)
            self._fail(plugin.name, plugin.kind, str(exc).splitlines()[0])
            return False
        for pm_name in plugin.pm_names:
            self._owner[pm_name] = plugin
        return True

    def _fail(self, name: str, kind: str, cause: str) -> Failure:
        failure = Failure(name, kind, cause.rstrip("."))
        self.failures.append(failure)
        plugin = self.loaded.pop(name, None)
        if plugin is not None:
            for pm_name in plugin.pm_names:
                self.pm.unregister(name=pm_name)
        return failure

    def hooks_of(self, plugin: LoadedPlugin) -> list[str]:
        """Names of the hooks ``plugin`` implements."""
        names = set()
        for obj in plugin.objects:
            names.update(c.name for c in self.pm.get_hookcallers(obj) or [])
        return sorted(names)

    # -- contexts --------------------------------------------------------------------------

    def kit_short_name(self) -> str | None:
        kit = self.active_kit()
        if kit is None:
            return None
        info = self.kit_info or {}
        return str(info.get("short_name") or short_name_of(kit))

    def context(self, plugin: LoadedPlugin) -> CoreContext:
        """The context handed to ``plugin``'s hooks: the kit's, or the looser core one."""
        if plugin.context is None:
            flow = self.flow
            kit = self.active_kit()

            def packages() -> Any:
                return flow.packages

            if kit is not None and plugin.kind in ("kit", "kit-plugin", "project"):
                plugin.context = KitContext(
                    plugin.name, flow.config, packages,
                    kit=kit, kit_short_name=self.kit_short_name() or short_name_of(kit),
                )
            else:
                plugin.context = CoreContext(plugin.name, flow.config, packages)
        return plugin.context

    # -- calling hooks ---------------------------------------------------------------------

    def call(self, hook: str, **kwargs: Any) -> list[Any]:
        """Call ``hook`` on every kit and plugin of this run; the non-``None`` results in order.

        This is how the core and kits call hooks (``flow create`` calls
        ``flow_create_templates``, ``flow publish`` calls ``flow_publish_checks``). Each
        implementation gets its own plugin's ``context``; one that raises is reported and left out.
        """
        self.load_all()
        return [result for _, result in self.call_loaded(hook, **kwargs)]

    def call_loaded(
        self, hook: str, *, only: set[str] | None = None, report_now: bool = True, **kwargs: Any
    ) -> list[tuple[LoadedPlugin, Any]]:
        """Call ``hook`` on the plugins loaded so far (``only``: just these), in load order."""
        caller = getattr(self.pm.hook, hook, None)
        if caller is None:
            return []
        order = {name: i for i, name in enumerate(self._owner)}

        def position(impl: Any) -> tuple[int, int]:
            rank = 0 if impl.tryfirst else 2 if impl.trylast else 1
            return rank, order.get(impl.plugin_name, len(order))

        results: list[tuple[LoadedPlugin, Any]] = []
        for impl in sorted(caller.get_hookimpls(), key=position):
            plugin = self._owner.get(impl.plugin_name)
            if plugin is None or plugin.name not in self.loaded:
                continue  # unregistered after an earlier failure
            if only is not None and plugin.name not in only:
                continue
            if impl.wrapper or impl.hookwrapper:
                continue
            args = {**kwargs, "context": self.context(plugin)}
            try:
                result = impl.function(*[args[a] for a in impl.argnames])
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - isolation
                failure = self._fail(plugin.name, plugin.kind, f"{type(exc).__name__}: {exc}")
                if report_now:
                    report(failure, self.strict, where=f"in {hook}")
                continue
            if result is not None:
                results.append((plugin, result))
        return results

    # -- what the CommandRegistry asks for -------------------------------------------------

    def describe_kit(self) -> dict[str, Any] | None:
        """Ask the active kit to describe itself (``flow_kit_info``), with defaults filled in."""
        kit = self.active_kit()
        if kit is None or kit not in self.loaded:
            return None
        answers = self.call_loaded("flow_kit_info", only={kit}, report_now=False)
        info = dict(answers[0][1]) if answers and isinstance(answers[0][1], dict) else {}
        info.setdefault("short_name", short_name_of(kit))
        info.setdefault("description", "")
        info.setdefault("config_schema", {})
        info["name"] = kit
        self.kit_info = info
        return info

    def collect_commands(self, only: set[str] | None = None) -> list[tuple[LoadedPlugin, str, Any]]:
        """Run ``flow_register_commands``: ``(plugin, name, click command)`` in load order.

        A plugin that raises or adds something that is not a click command contributes nothing
        (all or nothing: it is recorded as failed).
        """
        from flowcore.registry import RegistryView

        out: list[tuple[LoadedPlugin, str, Any]] = []
        caller = getattr(self.pm.hook, "flow_register_commands")
        for plugin in list(self.loaded.values()):
            if only is not None and plugin.name not in only:
                continue
            view = RegistryView(plugin.name)
            context = self.context(plugin)
            context._register = view.add
            impls = [i for i in caller.get_hookimpls() if i.plugin in plugin.objects]
            try:
                for impl in impls:
                    args = {"registry": view, "context": context}
                    impl.function(*[args[a] for a in impl.argnames])
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - isolation
                self._fail(plugin.name, plugin.kind,
                           f"flow_register_commands raised {type(exc).__name__}: {exc}")
                continue
            finally:
                context._register = None
            out += [(plugin, name, command) for name, command in view.commands]
        return out
