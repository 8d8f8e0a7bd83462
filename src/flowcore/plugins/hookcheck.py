"""Kit-declared hooks, and the one check of a plugin's hook implementations against the specs.

A kit declares hooks of its own on pytest's ``pytest_addhooks`` model: it implements the core
hook ``flow_addhooks(hooks)`` and calls ``hooks.add(module)`` (a :class:`SpecAdder`, public as
``flowcore.api.HookSpecs``). Its specs then exist in that PluginManager only, so kit hooks cost
nothing until the kit is loaded.

The same functions run where a plugin is loaded (``flowcore.plugins.system``) and where it is
installed (the probe of ``flowcore.packages.probe``, in the environment's own interpreter, which
loads the specs of the kits the plugin declares): so install and load accept, refuse and warn
about the same plugins. A signature that does not fit a declared hook is refused
(``pluggy.PluginValidationError``, reworded to one line by :func:`validation_message`); a hook
that nothing declares is only warned about (:func:`warn_undeclared`): flow never calls it, and
the plugin's other hooks still work.

Imported only where plugins are loaded or probed; pluggy comes with the PluginManager passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

    import pluggy

#: The core hook through which a kit declares its own hooks.
ADDHOOKS = "flow_addhooks"

#: ``(plugin, hook)`` pairs warned about in this process: install then reload warn once.
_WARNED: set[tuple[str, str]] = set()


class SpecAdder:
    """The ``hooks`` argument of ``flow_addhooks`` (``flowcore.api.HookSpecs``) for one kit."""

    def __init__(self, pm: pluggy.PluginManager, kit: str) -> None:
        self._pm = pm
        self.kit = kit
        #: The hook names this kit declared, in the order it declared them.
        self.added: list[str] = []

    def add(self, module_or_class: ModuleType | type) -> None:
        """Declare every ``@hookspec`` function of ``module_or_class`` (pluggy's
        ``add_hookspecs``), after checking that each name is a new ``flow_`` hook."""
        pm = self._pm
        names = [n for n in dir(module_or_class)
                 if pm.parse_hookspec_opts(module_or_class, n) is not None]
        where = getattr(module_or_class, "__name__", repr(module_or_class))
        if not names:
            raise ValueError(f"hooks.add({where}) found no function marked with "
                             f"flowcore.api.hookspec; mark the kit's hook specifications "
                             f"@hookspec")
        for name in names:
            if not name.startswith("flow_"):
                raise ValueError(f"kit hook '{name}' in {where} must be named flow_<kit>_<what>")
            caller = getattr(pm.hook, name, None)
            if caller is not None and caller.has_spec():
                raise ValueError(f"hook '{name}' in {where} is declared already (by flowcore "
                                 f"or another kit); give it the kit's prefix")
        pm.add_hookspecs(module_or_class)
        self.added += names


def add_kit_hooks(pm: pluggy.PluginManager, kit: str,
                  call: Callable[[SpecAdder], object]) -> list[str]:
    """Let ``kit`` declare its hooks: ``call(adder)`` runs the kit's ``flow_addhooks`` (the
    loader's way, with its isolation); returns the names declared."""
    adder = SpecAdder(pm, kit)
    call(adder)
    return adder.added


def register_checked(pm: pluggy.PluginManager, namespace: object, name: str) -> list[str]:
    """Register ``namespace`` as plugin ``name``; the hooks it implements that nothing declares.

    pluggy checks every implementation of a declared hook against its spec and raises
    ``pluggy.PluginValidationError`` (the plugin is then left unregistered): the caller refuses
    the plugin with :func:`validation_message`. An undeclared hook stays registered without a
    spec (pluggy's own behaviour: a kit loaded later in the process validates it then).
    """
    import pluggy

    try:
        pm.register(namespace, name=name)
    except pluggy.PluginValidationError:
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)
        raise
    undeclared: list[str] = []
    for caller in pm.get_hookcallers(namespace) or []:
        impls = [i for i in caller.get_hookimpls() if i.plugin is namespace]
        if not caller.has_spec() and not any(i.optionalhook for i in impls):
            undeclared.append(caller.name)
    return sorted(undeclared)


def declare_kit_hooks(pm: pluggy.PluginManager, kit: object, name: str) -> list[str]:
    """Call ``kit``'s ``flow_addhooks`` outside the loader (the install check): the specs it
    adds go into ``pm``, where a plugin is then checked as :func:`register_checked` does at
    load. ``kit`` is registered only to find its implementation, and unregistered before it
    runs, so that ``pm`` holds nothing but the specs."""
    pm.register(kit, name=f"{name}:addhooks")
    try:
        impls = [i for i in pm.hook.flow_addhooks.get_hookimpls() if i.plugin is kit]
    finally:
        pm.unregister(name=f"{name}:addhooks")
    adder = SpecAdder(pm, name)
    for impl in impls:
        impl.function(**{arg: adder for arg in impl.argnames if arg == "hooks"})
    return adder.added


def check_for_install(obj: object, name: str, kits: Sequence[str],
                      entry_points: Callable[[str], list[str] | None]) -> dict[str, object]:
    """What loading ``obj`` (an imported entry point of ``name``) would say of its hooks, found
    before the install is committed (``flowcore.packages.probe`` runs this in the managed
    environment's interpreter): ``{"undeclared": [...], "hook_error": str | None}``.

    The PluginManager holds flowcore's specs, those of ``kits`` (the plugin's
    ``FLOW_BUILD_KITS``) that are installed (``entry_points(kit)``: their entry point values,
    ``None`` when not installed; ``system.entry_point_values``), and, when ``obj`` is itself a
    kit, its own; a kit that is not installed or fails to load adds nothing (its hooks are then
    undeclared).
    """
    import pluggy

    from flowcore.plugins import hookspecs
    from flowcore.plugins.markers import PROJECT_NAME
    from flowcore.plugins.registry_view import load_object

    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for kit in kits:
        try:
            for value in entry_points(kit) or ():
                declare_kit_hooks(pm, load_object(value.split("[", 1)[0].strip()), kit)
        except Exception:  # noqa: BLE001,S112 - the kit's own problem, reported when it loads
            continue
    try:
        if ADDHOOKS in dir(obj):
            declare_kit_hooks(pm, obj, name)
        undeclared = register_checked(pm, obj, name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        return {"undeclared": [], "hook_error": validation_message(exc)}
    except Exception as exc:  # noqa: BLE001 - a kit's flow_addhooks that raises
        return {"undeclared": [], "hook_error": f"{ADDHOOKS} raised {type(exc).__name__}: {exc}"}
    return {"undeclared": undeclared, "hook_error": None}


def validation_message(exc: BaseException) -> str:
    """pluggy's several-line validation error as one line (hook, definition and reason)."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def undeclared_text(plugin: str, hook: str,
                    kits: Sequence[str] | None = None) -> tuple[str, str]:
    """``(cause, fix)`` of the warning about ``plugin`` implementing ``hook`` that nothing
    declares: at load (``kits`` None) flowcore and the loaded kit; at install flowcore and
    ``kits``, the installed kits the plugin names in ``FLOW_BUILD_KITS``."""
    cause = f"plugin '{plugin}' implements hook '{hook}', which "
    if kits is None:
        cause += "neither flowcore nor the loaded kit declares"
    elif kits:
        cause += f"neither flowcore nor its kits ({', '.join(kits)}) declare"
    else:
        cause += "flowcore does not declare (and it names no kit in FLOW_BUILD_KITS)"
    cause += ", so flow never calls it"
    fix = ("Check the name against docs/hooks.md and the kit's hook reference, or install the "
           "kit that declares it")
    return cause, fix


def warn_undeclared(plugin: str, hooks: Sequence[str],
                    kits: Sequence[str] | None = None) -> None:
    """Warn once per process about each of ``hooks`` (see :func:`undeclared_text`)."""
    from flowcore._base.errors import warn

    for hook in hooks:
        if (plugin, hook) not in _WARNED:
            _WARNED.add((plugin, hook))
            warn(*undeclared_text(plugin, hook, kits))
