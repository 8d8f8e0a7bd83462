"""PluginSystem: the pluggy PluginManager, discovery, load order, contexts and isolation.

What loads (architecture notes, section 4): the active kit first (``-k`` wins, then the project's
``buildkit`` inside a project, else the global ``activeBuildKit``), then the kit-bound plugins
(global scope) or the project's plugins (project scope), then the general plugins.
``FLOW_LOAD_PLUGINS=a,b`` keeps only the named plugins and ``FLOW_LOAD_PLUGINS=`` none; it never
drops the kit. Only distributions named in the config are loaded, through their ``flow.kits`` and
``flow.plugins`` entry points.

Hooks are called through pluggy itself, so ``firstresult``, ``tryfirst``/``trylast`` and hook
wrappers (``wrapper=True``, ``hookwrapper=True``) behave as pluggy documents. Plugins are
registered in reverse load order, because pluggy calls the last registered first: the kit is
then called first, general plugins last. Two things pluggy does not do are added by registering,
instead of the plugin's own module, a namespace of *guards*, one per hook implementation, each
carrying the implementation's own marker options:

* each implementation gets its own plugin's ``context`` (and, in ``flow_register_commands``, its
  own ``registry``), although pluggy passes every implementation the same arguments;
* isolation: a kit or plugin that fails to import, fails validation or raises inside a hook is
  recorded as a :class:`~flowcore.plugins.records.Failure`, reported in one line naming it and the fix,
  unregistered and skipped (a wrapper that raises lets the call through unchanged);
  ``--strict-plugins`` / ``FLOW_STRICT_PLUGINS=1`` turn the report into a ``PluginLoadError``.

This module is only imported when a plugin has to be loaded (never by ``flow --help``); pluggy
and ``importlib.metadata`` are imported inside the functions that need them.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Generator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from flowcore._base.errors import FlowError, PluginLoadError, warn
from flowcore.config.environment import ENTRY_POINT_GROUPS, canonical_name
from flowcore.plugins.context import KitPluginContext, PluginContext, short_name_of
from flowcore.plugins.records import Failure, PluginRecord, file_stamp

if TYPE_CHECKING:
    from pathlib import Path

    import click
    import pluggy

    from flowcore.plugins.registry_view import RegistryView
    from flowcore.plugins.run import Run

#: Hooks that wrap every command; plugins implementing them are loaded on every dispatch.
COMMAND_HOOKS = ("flow_before_command", "flow_after_command")
#: The attribute ``hookimpl`` sets on a function it marks (pluggy's ``<project>_impl``).
_IMPL_MARK = "flow_impl"
#: Arguments flow fills in per plugin: pluggy passes the placeholder, the guard the real one.
PER_PLUGIN_ARGS = ("context", "registry")


def load_plugins_filter() -> set[str] | None:
    """The ``FLOW_LOAD_PLUGINS`` selection: ``None`` when unset, else the normalised names."""
    value = os.environ.get("FLOW_LOAD_PLUGINS")
    if value is None:
        return None
    return {canonical_name(n) for n in value.split(",") if n.strip()}


#: The cause of a failure whose distribution is missing from the managed environment (the
#: config lists it, so the fix is to reinstall it, not to delete it from the config).
NOT_INSTALLED = "it is not installed in the flow environment"


def failure_line(failure: Failure, where: str = "to load") -> tuple[str, str]:
    """``(cause, fix)`` of the one-line report for a failed kit or plugin."""
    what = "build kit" if failure.kind == "kit" else "plugin"
    command = "buildkit" if failure.kind == "kit" else "plugin"
    if failure.cause == NOT_INSTALLED:
        fix = (f"Reinstall it with: flow doctor --fix (or, to stop using it: flow {command} "
               f"delete {failure.name})")
    else:
        fix = f"Remove it with: flow {command} delete {failure.name}"
    return f"{what} '{failure.name}' failed {where}: {failure.cause}", fix


def report(failure: Failure, strict: bool, where: str = "to load") -> None:
    """Warn about ``failure`` on stderr, or raise ``PluginLoadError`` when strict."""
    cause, fix = failure_line(failure, where)
    if strict:
        raise PluginLoadError(cause, f"{fix} (or run without --strict-plugins)")
    warn(cause, fix)


class LoadedPlugin:
    """A kit or plugin registered with the PluginManager in this process.

    ``kind`` is "kit", "kit-plugin", "project" or "general"; ``objects`` are what its entry points
    name, ``registered`` the guard namespaces registered with pluggy in their place; ``files``
    are the stamps of its module files (see ``records.file_stamp``).
    """

    def __init__(self, name: str, kind: str, entry_points: list[str]) -> None:
        self.name = name
        self.kind = kind
        self.entry_points = entry_points
        self.objects: list[object] = []
        self.registered: list[_Guards] = []
        self.pm_names: list[str] = []
        self.files: list[str] = []
        self.context: PluginContext | None = None
        #: The hooks a kit declared through ``flow_addhooks`` when it loaded.
        self.declares: list[str] = []

    def record(self, hooks: list[str]) -> PluginRecord:
        return PluginRecord(self.name, self.kind, self.entry_points, sorted(hooks), list(self.files))


class _Guards(ModuleType):
    """What flow registers with pluggy for one entry point of a plugin: its guards, as
    attributes named like the implementations. A module object, because pluggy looks at every
    name ``dir()`` lists, and a module lists only its own."""

    def __init__(self, plugin: str) -> None:
        super().__init__(f"flow-hooks:{plugin}")

    def __repr__(self) -> str:
        return f"<hooks of {self.__name__.partition(':')[2]}>"


class _Call:
    """What one hook call collects besides pluggy's result: who produced which answer."""

    __slots__ = ("hook", "report_now", "produced", "wrappers")

    def __init__(self, hook: str, report_now: bool) -> None:
        self.hook = hook
        self.report_now = report_now
        self.produced: list[tuple[LoadedPlugin, object]] = []
        self.wrappers: list[LoadedPlugin] = []


class PluginSystem:
    """The kits and plugins of one run, loaded on demand."""

    def __init__(self, flow: Run) -> None:
        self.flow = flow
        self.reset()

    def reset(self) -> None:
        """Forget everything loaded so far (used before rebuilding the manifest)."""
        self._pm: pluggy.PluginManager | None = None
        self.loaded: dict[str, LoadedPlugin] = {}
        self.failures: list[Failure] = []
        self.kit_info: dict[str, Any] | None = None
        self._all_loaded = False
        self._registration: list[str] = []  # pm names, in the order they were registered
        self._calls: list[_Call] = []  # hook calls in progress (a hook may call hooks)
        self._views: dict[str, RegistryView] = {}  # per plugin, while flow_register_commands runs

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
        out: list[tuple[str, str]] = []
        kit = self.active_kit()
        if kit:
            out.append((kit, "kit"))
        selected = load_plugins_filter()
        for ref in self.flow.config.plugins_to_load:
            if selected is not None and canonical_name(ref.name) not in selected:
                continue
            if all(canonical_name(ref.name) != canonical_name(n) for n, _ in out):
                out.append((ref.name, _plugin_kind(ref.kind)))
        return out

    def env_dirs(self) -> list[Path]:
        """Managed environments whose packages this run can import: project's first, global."""
        from flowcore.config.environment import env_dirs_for

        return env_dirs_for(self.flow.config)

    def _activate_envs(self, env_dirs: Sequence[str | Path] | None = None) -> None:
        from flowcore.config.environment import add_to_sys_path

        for env_dir in env_dirs if env_dirs is not None else self.env_dirs():
            add_to_sys_path(env_dir)

    # -- loading ---------------------------------------------------------------------------

    @property
    def pm(self) -> pluggy.PluginManager:
        if self._pm is None:
            import pluggy

            from flowcore.plugins import hookspecs
            from flowcore.plugins.markers import PROJECT_NAME

            self._pm = pluggy.PluginManager(PROJECT_NAME)
            self._pm.add_hookspecs(hookspecs)
        return self._pm

    def load_all(self) -> list[LoadedPlugin]:
        """Discover and load every kit and plugin of this run (the slow path: metadata scan)."""
        if self._all_loaded:
            return list(self.loaded.values())
        self._all_loaded = True
        self._activate_envs()
        imported: list[LoadedPlugin | None] = []
        listings: dict[str, list[str]] = {}
        for name, kind in self.plan():
            if name in self.loaded or any(f.name == name for f in self.failures):
                continue
            values = entry_point_values(name, listings)
            if values is None:
                self._fail(name, kind, NOT_INSTALLED)
                continue
            if not values:
                self._fail(name, kind, "it declares no '{}' or '{}' entry point".format(
                    *ENTRY_POINT_GROUPS))
                continue
            imported.append(self._import(name, kind, values, check_api=True))
        self._add(imported, check=True)
        return list(self.loaded.values())

    def load_records(self, records: list[PluginRecord], env_dirs: list[str]) -> None:
        """Load plugins named by a cached manifest, without scanning any metadata.

        They passed the API check and the hook check (no undeclared hooks warned about again)
        when the manifest was built, and any upgrade since would have changed the manifest's
        fingerprint, so the checks are not repeated here. A kit-bound plugin may so be loaded
        before its kit (for its own command): its kit hooks wait without a spec, and pluggy
        checks them when the kit declares them.
        """
        self._activate_envs(env_dirs)
        failed = {f.name for f in self.failures}
        self._add([self._import(r.name, r.kind, r.entry_points) for r in records
                   if r.name not in self.loaded and r.name not in failed])

    def _add(self, imported: Sequence[LoadedPlugin | None], *, check: bool = False) -> None:
        """Register newly imported plugins (given in load order) and make them loaded.

        The last of them is registered first: pluggy calls the last registered first, so this
        makes it call them in load order. A kit among them goes first of all, on its own, to
        declare its hooks (``flow_addhooks``) before the plugins that implement them are
        registered and checked; it is then registered again, last, to be called first.
        ``check``: warn about hooks nothing declares (see ``load_records`` for when not).
        """
        fresh = [p for p in imported if p is not None]
        kit = next((p for p in fresh if p.kind == "kit"), None)
        if kit is not None:
            if self._register(kit, check=False) and self._declare_hooks(kit):
                self._unregister(kit)
            else:
                fresh.remove(kit)
        registered = {p.name for p in reversed(fresh) if self._register(p, check=check)}
        for plugin in fresh:
            if plugin.name in registered:
                self.loaded[plugin.name] = plugin
        self._order()

    def _import(
        self, name: str, kind: str, values: list[str], *, check_api: bool = False
    ) -> LoadedPlugin | None:
        """Import ``name``'s entry points (and check its ``FLOW_API``); ``None`` if it failed."""
        from flowcore.plugins.registry_view import load_object

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
        return plugin

    @staticmethod
    def _check_api(obj: object) -> None:
        from flowcore.plugins.api_version import api_problem

        problem = api_problem(getattr(obj, "FLOW_API", None))
        if problem:
            raise PluginLoadError(f"it {problem}")

    def _register(self, plugin: LoadedPlugin, *, check: bool) -> bool:
        """Register ``plugin``'s guards with pluggy, which validates them against the specs
        (``hookcheck.register_checked``, the check ``flow plugin add`` runs too): a signature
        that does not fit fails the plugin; with ``check``, a hook that neither flowcore nor the
        loaded kit declares is warned about (the plugin's other hooks still work)."""
        import pluggy

        from flowcore.plugins.hookcheck import (
            register_checked,
            validation_message,
            warn_undeclared,
        )

        pm = self.pm
        plugin.pm_names = [plugin.name if i == 0 else f"{plugin.name}#{i}"
                           for i in range(len(plugin.objects))]
        plugin.registered = [self._guards(plugin, obj) for obj in plugin.objects]
        undeclared: set[str] = set()
        try:
            # last first, like the plugins themselves (see _add)
            for pm_name, namespace in reversed(list(zip(plugin.pm_names, plugin.registered, strict=True))):
                undeclared.update(register_checked(pm, namespace, pm_name))
                self._registration.append(pm_name)
                for caller in pm.get_hookcallers(namespace) or []:
                    for impl in caller.get_hookimpls():
                        if impl.plugin is namespace:
                            impl.function.flow_argnames = impl.argnames  # type: ignore[attr-defined]
        except (pluggy.PluginValidationError, ValueError) as exc:
            self._unregister(plugin)
            self._fail(plugin.name, plugin.kind, validation_message(exc))
            return False
        if check and undeclared:
            warn_undeclared(plugin.name, sorted(undeclared))
        return True

    def _declare_hooks(self, kit: LoadedPlugin) -> bool:
        """Call the (registered) kit's ``flow_addhooks``, so that its hooks exist before its
        plugins are registered; ``False`` when it raised (the kit is then failed)."""
        from flowcore.plugins.hookcheck import ADDHOOKS, SpecAdder

        self.loaded[kit.name] = kit  # guards run only for loaded plugins
        adder = SpecAdder(self.pm, kit.name)
        self._call(ADDHOOKS, {kit.name}, False, {"hooks": adder})
        kit.declares = list(adder.added)
        return kit.name in self.loaded

    def _unregister(self, plugin: LoadedPlugin) -> None:
        for pm_name in plugin.pm_names:
            if self.pm.get_plugin(pm_name) is not None:
                self.pm.unregister(name=pm_name)
            if pm_name in self._registration:
                self._registration.remove(pm_name)

    def _order(self) -> None:
        """Re-register so that pluggy calls the plugins in load order (it calls the last
        registered first); a no-op unless plugins were loaded in several batches (a command's
        plugin, then those of the command hooks) out of load order."""
        wanted = [n for p in reversed(self.loaded.values()) for n in reversed(p.pm_names)]
        if wanted == self._registration:
            return
        pm = self.pm
        owners = {n: ns for p in self.loaded.values() for n, ns in zip(p.pm_names, p.registered, strict=True)}
        for name in wanted:
            pm.unregister(name=name)
        for name in wanted:
            pm.register(owners[name], name=name)
        self._registration = wanted

    def _fail(self, name: str, kind: str, cause: str) -> Failure:
        failure = Failure(name, kind, cause.rstrip("."))
        self.failures.append(failure)
        plugin = self.loaded.pop(name, None)
        if plugin is not None:
            self._unregister(plugin)
        return failure

    def hooks_of(self, plugin: LoadedPlugin) -> list[str]:
        """Names of the hooks ``plugin`` implements."""
        names: set[str] = set()
        for namespace in plugin.registered:
            names.update(c.name for c in self.pm.get_hookcallers(namespace) or [])
        return sorted(names)

    # -- guards: per-plugin arguments and isolation ----------------------------------------

    def _guards(self, plugin: LoadedPlugin, obj: object) -> _Guards:
        """A namespace holding one guard per hook implementation of ``obj``.

        Each guard has the implementation's signature (``functools.wraps``, which pluggy reads
        through) and its marker options (copied with ``__dict__``), so pluggy treats it exactly
        as the implementation: same hook, same ``tryfirst``/``trylast``/``wrapper`` options.
        """
        namespace = _Guards(plugin.name)
        # A module (the usual entry point) holds its implementations as plain functions: look
        # at those only, instead of asking pluggy about every name the module imported.
        module = vars(obj) if inspect.ismodule(obj) else None
        for attr in dir(obj):
            if module is not None and not (inspect.isfunction(module.get(attr))
                                           and _IMPL_MARK in module[attr].__dict__):
                continue
            opts = self.pm.parse_hookimpl_opts(obj, attr)
            if opts is None:
                continue
            function = getattr(obj, attr)
            hook = opts.get("specname") or attr
            guard: Callable[..., object]
            if (opts.get("wrapper") or opts.get("hookwrapper")) and inspect.isgeneratorfunction(
                    function):
                guard = self._wrapper_guard(plugin, hook, function)
            else:
                guard = self._call_guard(plugin, hook, function)
            setattr(namespace, attr, guard)
        return namespace

    def _arguments(self, plugin: LoadedPlugin, guard: Callable[..., object],
                   args: tuple[object, ...], kwargs: dict[str, object]
                   ) -> tuple[list[object], dict[str, object]]:
        """``args``/``kwargs`` as pluggy passed them, with this plugin's own context (and
        registry) in place of the placeholders."""
        own: dict[str, object] = {"context": self.context(plugin)}
        if plugin.name in self._views:
            own["registry"] = self._views[plugin.name]
        names = getattr(guard, "flow_argnames", ())
        out = [own[n] if n in own else a for n, a in zip(names, args, strict=False)]
        return out, {k: own.get(k, v) for k, v in kwargs.items()}

    def _call_guard(self, plugin: LoadedPlugin, hook: str,
                    function: Callable[..., object]) -> Callable[..., object]:
        @functools.wraps(function)
        def guard(*args: object, **kwargs: object) -> object:
            if plugin.name not in self.loaded:
                return None  # failed earlier in this call
            call_args, call_kwargs = self._arguments(plugin, guard, args, kwargs)
            try:
                result = function(*call_args, **call_kwargs)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - isolation
                if isinstance(exc, FlowError) and self._kit_declared(hook):
                    raise  # a kit hook's refusal, e.g. flow_cloudbuild_before_upload: the kit's call
                self._hook_failed(plugin, hook, exc)
                return None
            if result is not None and self._calls:
                self._calls[-1].produced.append((plugin, result))
            return result

        return guard

    def _kit_declared(self, hook: str) -> bool:
        """Whether a loaded kit declared ``hook``: a ``FlowError`` raised in one is the plugin's
        answer (cause and fix for the user), and reaches the kit that called it; the kit's hook
        reference says what it means there. Core hooks keep their isolation."""
        return any(hook in p.declares for p in self.loaded.values())

    def _wrapper_guard(self, plugin: LoadedPlugin, hook: str,
                       function: Callable[..., Generator[object, object, object]]
                       ) -> Callable[..., Generator[None, object, object]]:
        """Guard of a hook wrapper (new-style ``wrapper=True`` or old-style ``hookwrapper``).

        It drives the plugin's generator in step with pluggy: setup, the inner call's outcome
        sent (or its exception thrown) in, teardown. A wrapper that raises, does not yield or
        yields twice is reported and skipped, and the call goes on as if it were not there.
        """
        @functools.wraps(function)
        def guard(*args: object, **kwargs: object) -> Generator[None, object, object]:
            if plugin.name not in self.loaded:
                return (yield)
            call_args, call_kwargs = self._arguments(plugin, guard, args, kwargs)
            try:
                gen = function(*call_args, **call_kwargs)
                next(gen)
            except StopIteration:
                self._hook_failed(plugin, hook, RuntimeError("the hook wrapper did not yield"))
                return (yield)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - isolation
                self._hook_failed(plugin, hook, exc)
                return (yield)
            if self._calls:
                self._calls[-1].wrappers.append(plugin)
            try:
                inner = yield
            except BaseException as inner_exc:
                try:
                    gen.throw(inner_exc)
                except StopIteration as stop:
                    return stop.value
                except (Exception, SystemExit) as exc:  # noqa: BLE001 - isolation
                    if exc is inner_exc:
                        raise
                    self._hook_failed(plugin, hook, exc)
                    raise inner_exc from None
                gen.close()
                self._hook_failed(plugin, hook, RuntimeError("the hook wrapper yielded twice"))
                raise
            try:
                gen.send(inner)
            except StopIteration as stop:
                return stop.value
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - isolation
                self._hook_failed(plugin, hook, exc)
                return inner
            gen.close()
            self._hook_failed(plugin, hook, RuntimeError("the hook wrapper yielded twice"))
            return inner

        return guard

    def _hook_failed(self, plugin: LoadedPlugin, hook: str, exc: BaseException) -> None:
        """Record (and, when the caller asks, report) ``plugin`` as failed in ``hook``."""
        if plugin.name not in self.loaded:
            return
        if hook in ("flow_register_commands", "flow_addhooks"):  # reported as load failures
            self._fail(plugin.name, plugin.kind, f"{hook} raised {type(exc).__name__}: {exc}")
            return
        failure = self._fail(plugin.name, plugin.kind, f"{type(exc).__name__}: {exc}")
        if self._calls and self._calls[-1].report_now:
            report(failure, self.strict, where=f"in {hook}")

    # -- contexts --------------------------------------------------------------------------

    def kit_short_name(self) -> str | None:
        kit = self.active_kit()
        if kit is None:
            return None
        info = self.kit_info or {}
        return str(info.get("short_name") or short_name_of(kit))

    def context(self, plugin: LoadedPlugin) -> PluginContext:
        """The context handed to ``plugin``'s hooks: the kit's, or the looser core one."""
        if plugin.context is None:
            plugin.context = self._make_context(plugin.name, plugin.kind)
        return plugin.context

    def context_for(self, name: str) -> PluginContext:
        """The context of distribution ``name`` in this run, loaded or not (for a command run
        outside flow's dispatch, e.g. under click's CliRunner)."""
        wanted = canonical_name(name)
        for plugin in self.loaded.values():
            if canonical_name(plugin.name) == wanted:
                return self.context(plugin)
        kind = next((k for n, k in self.plan() if canonical_name(n) == wanted), "general")
        return self._make_context(name, kind)

    def _make_context(self, name: str, kind: str) -> PluginContext:
        flow = self.flow
        kit = self.active_kit()

        def packages() -> Any:
            return flow.packages

        if kit is not None and kind in ("kit", "kit-plugin", "project"):
            return KitPluginContext(
                name, flow.config, packages, call_hook=self.call, hook_call=self.call_declared,
                kit=kit, kit_short_name=self.kit_short_name() or short_name_of(kit))
        return PluginContext(name, flow.config, packages, call_hook=self.call,
                             hook_call=self.call_declared)

    # -- calling hooks ---------------------------------------------------------------------

    def call(self, hook: str, **kwargs: object) -> list[object]:
        """Call ``hook`` on every kit and plugin of this run; the non-``None`` results in order.

        This is how the core and kits call hooks (``flow create`` calls
        ``flow_create_templates``; kits through ``context.hook``, or the older
        ``context.call_hook``). Each implementation gets its own plugin's ``context``; one that
        raises is reported and left out. A ``firstresult`` hook gives a list of at most one.
        A hook nothing declares gives ``[]`` (``call_hook``'s old contract; see
        :meth:`call_declared`).
        """
        self.load_all()
        result, _ = self._call(hook, None, True, kwargs)
        if isinstance(result, list):
            return result
        return [] if result is None else [result]

    def call_declared(self, hook: str, **kwargs: object) -> list[object]:
        """:meth:`call` for ``context.hook``: a hook that neither flowcore nor the loaded kit
        declares is a ``FlowError`` naming it (a typo, or a kit that forgot ``hooks.add``)."""
        self.load_all()
        caller = getattr(self.pm.hook, hook, None)
        if caller is None or not caller.has_spec():
            from flowcore._base.errors import FlowError

            kit = self.active_kit()
            raise FlowError(
                f"no hook '{hook}' is declared by flowcore"
                + (f" or the build kit {kit}" if kit and kit in self.loaded else ""),
                "Check the name against the hook reference; a kit declares its hooks in "
                "flow_addhooks with hooks.add(module)")
        return self.call(hook, **kwargs)

    def call_loaded(
        self, hook: str, *, only: set[str] | None = None, report_now: bool = True,
        **kwargs: object,
    ) -> list[tuple[LoadedPlugin, object]]:
        """Call ``hook`` on the plugins loaded so far (``only``: just these), in load order;
        each non-``None`` answer with the plugin that gave it (a wrapper's own additions are
        the wrapper's)."""
        result, call = self._call(hook, only, report_now, kwargs)
        items = result if isinstance(result, list) else [] if result is None else [result]
        produced = list(call.produced)
        out: list[tuple[LoadedPlugin, object]] = []
        for item in items:
            match = next((i for i, (_, r) in enumerate(produced) if r is item), None)
            if match is not None:
                out.append(produced.pop(match))
            elif call.wrappers:
                out.append((call.wrappers[0], item))
        return out

    def _call(self, hook: str, only: set[str] | None, report_now: bool,
              kwargs: dict[str, object]) -> tuple[object, _Call]:
        call = _Call(hook, report_now)
        caller = getattr(self.pm.hook, hook, None)
        if caller is None:
            return [], call
        if only is not None:
            others = [ns for p in self.loaded.values() if p.name not in only for ns in p.registered]
            caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
        placeholders = {name: None for name in PER_PLUGIN_ARGS}
        self._calls.append(call)
        try:
            return caller(**{**placeholders, **kwargs}), call
        finally:
            self._calls.pop()

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

    def collect_commands(
        self, only: set[str] | None = None
    ) -> list[tuple[LoadedPlugin, str, click.Command]]:
        """Run ``flow_register_commands``: ``(plugin, name, click command)`` in load order.

        Each plugin gets its own registry view. A plugin that raises or adds something that is
        not a click command contributes nothing (all or nothing: it is recorded as failed).
        """
        from flowcore.plugins.registry_view import RegistryView

        plugins = [p for p in self.loaded.values() if only is None or p.name in only]
        views = {p.name: RegistryView(p.name) for p in plugins}
        self._views = views
        for plugin in plugins:
            self.context(plugin).bind_registry(views[plugin.name].add)
        try:
            self._call("flow_register_commands", {p.name for p in plugins}, False, {})
        finally:
            self._views = {}
            for plugin in plugins:
                self.context(plugin).bind_registry(None)
        return [(p, name, command) for p in plugins if p.name in self.loaded
                for name, command in views[p.name].commands]


def _plugin_kind(config_kind: str) -> str:
    """The PluginSystem's kind for a config's ``PluginRef.kind`` (a kit-bound one is
    ``kit-plugin``, so that it is never mistaken for the kit itself)."""
    return "kit-plugin" if config_kind == "kit" else config_kind


def entry_point_values(name: str, listings: dict[str, list[str]] | None = None) -> list[str] | None:
    """The values of the ``flow.kits``/``flow.plugins`` entry points of distribution ``name``
    (in file order) as found first on ``sys.path``; ``None`` when it is not installed.

    The same distribution ``importlib.metadata.distributions(name=name)`` finds first, read
    from its ``.dist-info`` folder (flowcore.plugins.distinfo: no importlib.metadata import, no
    metadata parse); importlib.metadata itself only where its search could differ.
    """
    from flowcore.plugins import distinfo as _distinfo

    found = _distinfo.metadata_dirs(list(sys.path), name, listings)
    if found is not None:
        if not found:
            return None
        return [v for g, _, v in _distinfo.entry_points(found[0]) if g in ENTRY_POINT_GROUPS]
    from importlib.metadata import distributions

    dist = next(iter(distributions(name=name)), None)
    if dist is None:
        return None
    return [ep.value for ep in dist.entry_points if ep.group in ENTRY_POINT_GROUPS]
