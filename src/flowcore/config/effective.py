"""The effective view of one run: both config files and the command line, combined once.

``EffectiveConfig`` answers the questions every part of flow asks (scope, active kit, plugins
to load, trust) once per run, and holds every edit of either file as a typed operation, so no
other module re-derives the answers or knows the files' shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from flowcore._base.errors import ConfigError
from flowcore.config.global_config import GlobalConfig, load_global, set_dotted, update_global
from flowcore.config.project_config import ProjectConfig, add_project_key, edit_project, find_project
from flowcore.config.schema import SOURCE_SETTINGS

#: The package source keys of config.json, which ``set_value`` checks as locations.
GLOBAL_SOURCE_KEYS = frozenset(s[0] for s in SOURCE_SETTINGS)



class RunOptions:
    """The root command's global options, as given on the command line."""

    def __init__(
        self,
        debug: bool = False,
        global_scope: bool = False,
        build_kit: str | None = None,
        check_latest: bool = True,
        root: Path | None = None,
        config: Path | None = None,
        strict_plugins: bool = False,
    ) -> None:
        self.debug = debug
        self.global_scope = global_scope
        self.build_kit = build_kit
        self.check_latest = check_latest
        self.root = root
        self.config = config
        self.strict_plugins = strict_plugins


class PluginRef(NamedTuple):  # a NamedTuple: on every start, ~5x cheaper to define than a dataclass
    """A plugin to load this run, and why (``general``, ``kit`` or ``project``)."""

    name: str
    kind: str


class EffectiveConfig:
    """The global config, the project config and the command line, combined once per run.

    The derived views (scope, active kit, plugins to load) are computed once and cached, so
    every module reads the same answer and none re-derives it.
    """

    def __init__(
        self, global_config: GlobalConfig, project: ProjectConfig | None, options: RunOptions
    ) -> None:
        self.global_config = global_config
        self.project = project
        self.options = options

    @cached_property
    def scope(self) -> str:
        """``project`` inside a project (unless ``-g``), else ``global``."""
        return "project" if self.project is not None and not self.options.global_scope else "global"

    @cached_property
    def active_kit(self) -> str | None:
        return self.active_kit_and_origin()[0]

    @cached_property
    def trusted(self) -> bool:
        """Whether this run may use what the project asks for: its ``.flow/env``, its plugins,
        its package source (``flowcore.config.trust``). Outside a project, or with ``-g``, there is
        nothing to trust. The first access tells the user (or asks, on a terminal) if not."""
        if self.scope != "project" or self.project is None:
            return True
        from flowcore.config import trust

        return trust.check_project(self.project)

    @property
    def project_env_usable(self) -> bool:
        """Whether the project's ``.flow/env`` may be imported from this run."""
        if self.scope != "project" or self.project is None or not self.trusted:
            return False
        from flowcore.config import trust

        return trust.env_problem(self.project.root) is None

    def require_trust(self, action: str) -> None:
        """Raise ``ConfigError`` unless the project may be changed by ``action`` (it is trusted,
        the user says so now on a terminal, or it asks for nothing flow would run)."""
        if self.scope != "project" or self.project is None:
            return
        from flowcore.config import trust

        if not trust.requests(self.project):
            return
        if "trusted" not in self.__dict__:  # asks on a terminal; says nothing else: we raise
            self.__dict__["trusted"] = trust.check_project(self.project, quiet=True)
        if self.trusted:
            return
        raise ConfigError(
            f"cannot {action}: project {self.project.root} is not trusted",
            "Review its [tool.flow] and .flow/env, then run 'flow trust' (or use -g)")

    def active_kit_and_origin(self) -> tuple[str | None, str]:
        if self.options.build_kit:
            return self.options.build_kit, "command line (-k/--build-kit)"
        if self.scope == "project" and self.project and self.project.buildkit:
            return self.project.buildkit, str(self.project.file)
        return self.global_config.active_kit, str(self.global_config.path)

    @cached_property
    def plugins_to_load(self) -> list[PluginRef]:
        """Plugins for this run in load order: kit-bound or project plugins, then general ones."""
        refs: list[PluginRef] = []
        if self.scope == "project" and self.project is not None:
            if self.project.plugins and self.trusted:
                refs += [PluginRef(p, "project") for p in self.project.plugins]
        else:
            kit = self.global_config.kit(self.active_kit) if self.active_kit else None
            if kit is not None:
                refs += [PluginRef(p, "kit") for p in kit.plugins]
        refs += [PluginRef(p, "general") for p in self.global_config.general_plugins]
        first: dict[str, PluginRef] = {}  # a plugin listed twice loads where it comes first
        for ref in refs:
            first.setdefault(ref.name, ref)
        return list(first.values())

    @property
    def configured_plugins(self) -> list[str]:
        """Plugins this scope's config lists: the project's, or every plugin of the global file.

        What ``flow plugin delete`` can remove; ``plugins_to_load`` is what this run loads.
        """
        if self.scope == "project" and self.project is not None:
            return self.project.plugins
        return self.global_config.all_plugins

    # -- edits -----------------------------------------------------------------------------
    # The one place that knows the JSON shape of config.json and the keys of [tool.flow].
    # Each edit is locked and atomic, and refreshes this view, so that nothing after it in the
    # same run re-reads a file or sees the state from before.

    def _edit_global(self, mutate: Callable[[dict[str, Any]], Any]) -> GlobalConfig:
        self.global_config = update_global(mutate, self.global_config.path)
        self._refresh()
        return self.global_config

    def _edit_project(self, mutate: Callable[[Any], Any]) -> None:
        """Edit ``[tool.flow]``; a project trusted before flow's own edit stays trusted."""
        if self.project is None:
            raise ConfigError("no project config to change", "Run the command inside a project")
        from flowcore.config import trust

        keep_trust = not trust.requests(self.project) or self.trusted
        edit_project(self.project, mutate)
        if keep_trust:
            trust.record(self.project.root, extra=[str(self.project.file)])
            self.__dict__["trusted"] = True
        self._refresh()

    def _refresh(self) -> None:
        for name in ("scope", "active_kit", "plugins_to_load"):
            self.__dict__.pop(name, None)

    def mark_kits_installed(self, names: list[str]) -> None:
        """Record kits as installed (flipping ``installed`` of a kit a plugin declared, keeping
        its plugins); the first of ``names`` becomes active when no installed kit is active."""
        def mutate(data: dict[str, Any]) -> None:
            kits = data.setdefault("buildKits", [])
            for name in names:
                entry = next((k for k in kits if k.get("name") == name), None)
                if entry is None:
                    kits.append({"name": name, "installed": True, "plugins": []})
                else:
                    entry["installed"] = True
            installed = {k["name"] for k in kits if k.get("installed")}
            if names and data.get("activeBuildKit") not in installed:
                data["activeBuildKit"] = names[0]

        self._edit_global(mutate)

    def remove_kits(self, names: list[str]) -> None:
        """Forget kits (canonical names); one with bound plugins stays declared, not installed,
        so they stay bound. The active kit passes to the first installed one left."""
        from flowcore.config.environment import canonical_name

        def mutate(data: dict[str, Any]) -> None:
            kept = []
            for k in data.get("buildKits", []):
                if canonical_name(k["name"]) in names:
                    if not k.get("plugins"):
                        continue
                    k["installed"] = False
                kept.append(k)
            data["buildKits"] = kept
            if canonical_name(data.get("activeBuildKit") or "") in names:
                data["activeBuildKit"] = next(
                    (k["name"] for k in kept if k.get("installed")), None)

        self._edit_global(mutate)

    def set_active_kit(self, name: str) -> str:
        """Make ``name`` the kit of this scope: the project's ``buildkit`` in project scope,
        else the global ``activeBuildKit``. Returns where it was written."""
        if self.scope == "project" and self.project is not None:
            self._edit_project(lambda table: add_project_key(table, "buildkit", name))
            return str(self.project.file)
        self._edit_global(lambda data: data.__setitem__("activeBuildKit", name))
        return str(self.global_config.path)

    def bind_plugins(self, plugins: list[tuple[str, tuple[str, ...]]]) -> None:
        """Add ``(plugin, build kits)`` pairs to this scope's config.

        Project scope: to ``[tool.flow] plugins``. Global scope: a plugin with kits joins each
        kit's list (declaring a kit not in the file yet as not installed), any other is general;
        a plugin added again moves to where its kits now say.
        """
        if self.scope == "project" and self.project is not None:
            def add(table: Any) -> None:
                import tomlkit

                if "plugins" not in table:
                    add_project_key(table, "plugins", tomlkit.array(), after=("buildkit",))
                for name, _ in plugins:
                    if name not in table["plugins"]:
                        table["plugins"].append(name)

            self._edit_project(add)
            return

        def mutate(data: dict[str, Any]) -> None:
            kits = data.setdefault("buildKits", [])
            general = data.setdefault("plugins", [])
            for name, build_kits in plugins:
                general[:] = [p for p in general if p != name]
                for k in kits:
                    k["plugins"] = [p for p in k.get("plugins", []) if p != name]
                if not build_kits:
                    general.append(name)
                    continue
                for kit in build_kits:
                    entry = next((k for k in kits if k["name"] == kit), None)
                    if entry is None:
                        entry = {"name": kit, "installed": False, "plugins": []}
                        kits.append(entry)
                    entry.setdefault("plugins", []).append(name)

        self._edit_global(mutate)

    def unbind_plugins(self, names: list[str]) -> None:
        """Remove plugins (canonical names) from this scope's config: the project's list, or the
        general list and every kit's list."""
        from flowcore.config.environment import canonical_name

        if self.scope == "project" and self.project is not None:
            def remove(table: Any) -> None:
                items = table.get("plugins")
                for i in reversed(range(len(items) if items is not None else 0)):
                    if canonical_name(str(items[i])) in names:
                        del items[i]
                if items is not None and len(items) == 0:
                    del table["plugins"]  # no `plugins = []` left behind

            self._edit_project(remove)
            return

        def mutate(data: dict[str, Any]) -> None:
            data["plugins"] = [p for p in data.get("plugins", [])
                               if canonical_name(p) not in names]
            for k in data.get("buildKits", []):
                k["plugins"] = [p for p in k.get("plugins", []) if canonical_name(p) not in names]

        self._edit_global(mutate)

    def set_value(self, key: str, value: Any) -> None:
        """Set a dotted ``key`` of the global config (``flow config set``). A package source
        key (``indexUrl``, ``extraIndexUrls``, ``findLinks``) is checked first: each value a URL
        or an existing path (made absolute)."""
        if key in GLOBAL_SOURCE_KEYS:
            from flowcore.config.package_source import normalise_for_set

            value = normalise_for_set(key, value)
        self._edit_global(lambda data: set_dotted(data, key, value))

    def package_source(self) -> Any:
        """Where this run downloads kits and plugins from (``PackageSource``), checked: the
        environment (``FLOW_INDEX_URL``, ...), then the project's ``[tool.flow]``, then
        ``config.json``. ``ConfigError`` names the setting, its origin and the fix."""
        from flowcore.config.package_source import resolve

        return resolve(self)

    def update_section(self, table: str, short_name: str,
                       mutate: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """Change one kit's or plugin's own section of the global config; returns a copy of it."""
        def apply(data: dict[str, Any]) -> None:
            mutate(data.setdefault(table, {}).setdefault(short_name, {}))

        import copy

        return copy.deepcopy(self._edit_global(apply).data[table][short_name])

    def describe(self) -> dict[str, Any]:
        """The effective configuration with the origin of each part, for ``flow config``."""
        kit, kit_origin = self.active_kit_and_origin()
        out: dict[str, Any] = {
            "scope": {"value": self.scope, "from": "command line (-g)" if self.options.global_scope
                      else (str(self.project.file) if self.project else "default")},
            "globalConfig": {"value": str(self.global_config.path),
                             "from": "FLOW_HOME" if _flow_home_set() else "default (~/.flow)",
                             "exists": self.global_config.exists},
            "projectRoot": {"value": str(self.project.root) if self.project else None,
                            "from": self._project_origin()},
            **self._describe_trust(),
            "activeBuildKit": {"value": kit, "from": kit_origin},
            "plugins": [{"value": r.name, "kind": r.kind,
                         "from": str(self.project.file) if r.kind == "project" and self.project
                         else str(self.global_config.path)} for r in self.plugins_to_load],
        }
        from flowcore.config.package_source import describe

        out.update(describe(self))
        return out

    def _describe_trust(self) -> dict[str, Any]:
        """``projectTrust`` for ``flow config``, in project scope: whether the project's own
        plugins, environment and package source are used, and where that is recorded."""
        if self.scope != "project" or self.project is None:
            return {}
        from flowcore.config import trust

        asked = trust.requests(self.project)
        value = ("trusted" if self.trusted else "not trusted: " + "; ".join(asked) + " unused"
                 ) if asked else "not needed (the project runs nothing of its own)"
        return {"projectTrust": {"value": value, "from": str(trust.store_path())}}

    def _project_origin(self) -> str:
        if self.project is None:
            return "none found from the working directory"
        if self.options.config:
            return "command line (--config)"
        if self.options.root:
            return "command line (--root)"
        return "found walking up from the working directory"


def _flow_home_set() -> bool:
    import os

    return bool(os.environ.get("FLOW_HOME"))


def load_effective(options: RunOptions, cwd: str | Path | None = None) -> EffectiveConfig:
    """Read and validate both configs for this run. Raises ``ConfigError`` before anything loads."""
    return EffectiveConfig(
        global_config=load_global(),
        project=find_project(cwd, options.root, options.config),
        options=options,
    )

