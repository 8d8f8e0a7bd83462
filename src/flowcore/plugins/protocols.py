"""Types of hook arguments: what a kit or plugin may rely on of what flow hands it.

Protocols: flow's own classes implement them, and a plugin's unit test can hand a hook any object
of the same shape. Public through flowcore.api, which re-exports them; here, in the plugin layer,
so that the hook specifications and the contexts can name them without importing the API.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    import logging
    from pathlib import Path
    from types import ModuleType

    import click


@runtime_checkable
class Registry(Protocol):
    """The ``registry`` argument of ``flow_register_commands``: this plugin's view of flow's
    top-level commands (flow records the plugin as each command's source)."""

    def add(self, command: click.Command, name: str | None = None) -> None:
        """Add a ``click.Command`` (or group) under ``name``, else under its own name."""
        ...


@runtime_checkable
class PluginConfig(Protocol):
    """``context.config``: read all of flow's configuration, write only this plugin's section."""

    def read(self) -> dict[str, object]:
        """A copy of the whole configuration: ``{"global": {...}, "project": {...} | None}``."""
        ...

    @property
    def section(self) -> dict[str, object]:
        """This plugin's own section: ``pluginConfig.<short>`` (``kitConfig.<short>`` for a kit)
        of ``$FLOW_HOME/config.json``, overridden key by key by ``[tool.flow.<short>]`` in a
        project."""
        ...

    def update_section(self, mutate: Callable[[dict[str, object]], object]) -> dict[str, object]:
        """Change this plugin's section of the global config (locked, atomic); returns it."""
        ...

    def get(self, key: str, default: object = None) -> object:
        """One key of :attr:`section` (project over global), or ``default`` when unset."""
        ...

    def set(self, key: str, value: object) -> None:
        """Set one key of this plugin's section in the global config."""
        ...


@runtime_checkable
class HookSpecs(Protocol):
    """The ``hooks`` argument of ``flow_addhooks``: where a kit declares its own hooks."""

    def add(self, module_or_class: ModuleType | type) -> None:
        """Declare every function of ``module_or_class`` marked ``@hookspec`` as a hook.

        Names start with ``flow_`` (``flow_<kit short name>_<what>`` by convention) and must
        not be declared already, by flowcore or another kit; a ``ValueError`` says which.
        """
        ...


class HookCaller(Protocol):
    """``context.hook``: the hooks of this run, called by name as attributes.

    ``context.hook.flow_python_before_build(project=root)`` calls every implementation (each
    with its own plugin's ``context``) and returns their non-``None`` results in pluggy's order;
    one that raises is reported and left out, as for core hooks. A kit may declare a Protocol of
    its own hooks and ``cast`` this to it, so that its calls are type-checked.
    """

    def __getattr__(self, name: str) -> Callable[..., list[Any]]: ...


class KitInfo(TypedDict, total=False):
    """What ``flow_kit_info`` returns (every key optional; flow fills in the defaults)."""

    #: The name of the kit's config section (``"python"`` for ``[tool.flow.python]``).
    short_name: str
    #: One line for listings.
    description: str
    #: Every key the kit reads in its section, with a one-line description of each.
    config_schema: dict[str, str]
    #: File names a project folder of this kit holds (any of them), e.g. ``["pyproject.toml"]``.
    project_files: list[str]


class Template(TypedDict):
    """One entry of what ``flow_create_templates`` returns."""

    #: Unique within the kit.
    name: str
    #: One line.
    description: str
    #: A local directory path or a git URL.
    source: str
    #: The distribution name of the kit the template belongs to.
    kit: str


@runtime_checkable
class InstalledPackage(Protocol):
    """A kit or plugin that :class:`Packages` installed."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def kind(self) -> str:
        """``"kit"`` or ``"plugin"``."""
        ...


@runtime_checkable
class Packages(Protocol):
    """``context.packages``: install, remove and list kits and plugins, as the ``flow buildkit``
    and ``flow plugin`` commands do (same transactions, same config updates)."""

    def installed_versions(self, scope: str = "global") -> dict[str, str]:
        """``{distribution: version}`` of a managed environment (``"global"``/``"project"``)."""
        ...

    def add_kits(self, specs: Sequence[str], find_links: Sequence[str] = (),
                 no_index: bool = False) -> Sequence[InstalledPackage]: ...

    def add_plugins(self, specs: Sequence[str], find_links: Sequence[str] = (),
                    no_index: bool = False) -> Sequence[InstalledPackage]: ...

    def delete_kits(self, names: Sequence[str]) -> list[str]: ...

    def delete_plugins(self, names: Sequence[str]) -> list[str]: ...


@runtime_checkable
class CoreContext(Protocol):
    """What every kit and plugin gets as ``context`` (a general plugin gets exactly this)."""

    @property
    def plugin(self) -> str:
        """This plugin's distribution name."""
        ...

    @property
    def short_name(self) -> str:
        """Its short name: the distribution name without ``flow-plugin-``/``flow-kit-`` (the
        name of its config section)."""
        ...

    @property
    def logger(self) -> logging.Logger:
        """A logger named ``flow.<distribution>``; ``--debug`` shows its debug records."""
        ...

    @property
    def config(self) -> PluginConfig: ...

    @property
    def scope(self) -> str:
        """``"project"`` inside a project (unless ``-g``), else ``"global"``."""
        ...

    @property
    def project_root(self) -> Path | None:
        """The project's root directory in project scope; ``None`` in global scope."""
        ...

    @property
    def active_kit(self) -> str | None:
        """The distribution name of this run's build kit, if any."""
        ...

    @property
    def plugins_to_load(self) -> list[tuple[str, str]]:
        """``(distribution, kind)`` of this run's plugins in load order; kind is ``"kit"``
        (kit-bound), ``"project"`` or ``"general"``."""
        ...

    @property
    def flow_home(self) -> Path:
        """flow's global home (``FLOW_HOME``, default ``~/.flow``)."""
        ...

    @property
    def environments(self) -> list[Path]:
        """The managed environments kits and plugins are imported from, the project's first."""
        ...

    @property
    def packages(self) -> Packages: ...

    @property
    def hook(self) -> HookCaller:
        """The hooks of this run: ``context.hook.flow_<name>(**arguments)`` calls every
        implementation and returns the non-``None`` results in order (see :class:`HookCaller`)."""
        ...

    def call_hook(self, hook: str, **kwargs: object) -> list[object]:
        """Same as ``getattr(context.hook, hook)(**kwargs)``; kept for compatibility, prefer
        ``context.hook``."""
        ...

    def register_command(self, command: click.Command, name: str | None = None) -> None:
        """Same as ``registry.add``; only valid while ``flow_register_commands`` runs."""
        ...


@runtime_checkable
class KitContext(CoreContext, Protocol):
    """The ``context`` of a build kit and of its kit-bound (or project) plugins."""

    @property
    def kit(self) -> str:
        """The kit's distribution name."""
        ...

    @property
    def kit_short_name(self) -> str:
        """The kit's short name: its config section, ``[tool.flow.<kit_short_name>]``."""
        ...

    @property
    def kit_config(self) -> PluginConfig:
        """The kit's own section (read it; only the kit itself writes it)."""
        ...


