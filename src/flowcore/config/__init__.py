"""ConfigSystem: the global config, the project config, and the effective view of both.

Everything here runs before any kit or plugin loads, so a broken file is reported (file,
position, key, fix) before it can break anything else. The global ``config.json`` is the source
of truth for what is installed; the project config (``[tool.flow]`` in ``pyproject.toml``, else
``flow.toml``) says which kit and plugins a project wants. ``EffectiveConfig`` combines them with
the command line once per run, so that other modules never re-derive the active kit or the
plugins to load.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from flowcore._base import paths
from flowcore._base.errors import ConfigError
from flowcore._base.fileio import (
    FileTooLarge,
    NotARegularFile,
    atomic_write_bytes,
    file_lock,
    read_limited,
    remove_stale_temp_files,
)

SCHEMA_VERSION = 1
#: The largest config file flow reads (config.json, pyproject.toml, flow.toml); a bigger one, or
#: one that is not a regular file (a FIFO, /dev/zero), is an error instead of a read without end.
MAX_CONFIG_BYTES = 4 * 1024 * 1024

def _defaults() -> dict[str, Any]:
    """Keys flow itself gives meaning to, with their defaults (a new dict on every call: no
    ``copy.deepcopy`` on the start-up path); every other key is preserved untouched."""
    return {
        "schemaVersion": SCHEMA_VERSION,
        "activeBuildKit": None,
        "buildKits": [],
        "plugins": [],
        "lastUpdateDate": 0,
    }



_REPAIR = "Fix the file by hand, or move it aside to start from an empty config"

#: The package source settings (see flowcore.config.package_source): key -> holds a list.
_SOURCE_KEYS_GLOBAL = {"indexUrl": False, "extraIndexUrls": True, "findLinks": True}
_SOURCE_KEYS_PROJECT = {"index-url": False, "extra-index-urls": True, "find-links": True}
#: The ``[tool.flow]`` keys that choose where ``flow plugin add`` downloads from (used only in a
#: trusted project: flowcore.config.trust).
PROJECT_SOURCE_KEYS = tuple(_SOURCE_KEYS_PROJECT)
#: The keys of config.json flow knows (users and plugins may keep their own beside them).
GLOBAL_KEYS = frozenset({*_defaults(), "latestVersion", "kitConfig", "pluginConfig",
                         *_SOURCE_KEYS_GLOBAL})
#: The keys of a ``buildKits[]`` entry: all of them belong to flow.
KIT_ENTRY_KEYS = frozenset({"name", "installed", "plugins"})
#: The plain keys of ``[tool.flow]`` (beside them: one table per kit or plugin, by short name);
#: ``watch-ignore`` is read by ``flowcore._base.watching`` for every kit's ``--watch``.
PROJECT_KEYS = frozenset({"buildkit", "plugins", "watch-ignore", *_SOURCE_KEYS_PROJECT})


# --------------------------------------------------------------------------------------------
# Global config (config.json)
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class KitEntry:
    """One entry of ``buildKits``: a kit that is installed or only declared by a plugin."""

    name: str
    installed: bool
    plugins: tuple[str, ...]


class GlobalConfig:
    """A validated ``config.json`` at ``path``. ``data`` is the raw mapping, unknown keys
    included."""

    def __init__(self, path: str | os.PathLike[str], data: dict[str, Any], exists: bool) -> None:
        self.path = Path(path)
        self.data = data
        self.exists = exists

    @property
    def active_kit(self) -> str | None:
        return self.data.get("activeBuildKit")

    @property
    def kits(self) -> list[KitEntry]:
        return [
            KitEntry(k["name"], bool(k.get("installed", False)), tuple(k.get("plugins", [])))
            for k in self.data.get("buildKits", [])
        ]

    @property
    def installed_kits(self) -> list[str]:
        return [k.name for k in self.kits if k.installed]

    @property
    def general_plugins(self) -> list[str]:
        return list(self.data.get("plugins", []))

    @property
    def all_plugins(self) -> list[str]:
        """Every plugin the file lists: general ones, then each kit's bound ones (no repeats)."""
        out = self.general_plugins
        for k in self.kits:
            out += [p for p in k.plugins if p not in out]
        return out

    @property
    def last_update_check(self) -> float:
        """When flow last looked for a newer flowcore (ms since the epoch; 0 = never)."""
        return self.data.get("lastUpdateDate") or 0

    @property
    def latest_version(self) -> str | None:
        """The newest flowcore version the last update check found, if any."""
        value = self.data.get("latestVersion")
        return value if isinstance(value, str) else None

    def kit(self, name: str) -> KitEntry | None:
        return next((k for k in self.kits if k.name == name), None)

    def section(self, table: str, short_name: str) -> dict[str, Any]:
        """A kit's (``kitConfig``) or plugin's (``pluginConfig``) own section; ``{}`` if absent."""
        value = self.data.get(table, {})
        value = value.get(short_name, {}) if isinstance(value, dict) else {}
        return value if isinstance(value, dict) else {}

    def get(self, key: str) -> Any:
        """Value at a dotted ``key`` (``a.b``); ``KeyError`` when absent."""
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(key)
            node = node[part]
        return node


def _read_config(path: str | Path, aside: str) -> bytes | None:
    """The bytes of a config file, None when there is none; ConfigError when it cannot be one.

    ``aside`` ends each fix: how to do without the file ("move it aside to ...").
    """
    try:
        return read_limited(path, MAX_CONFIG_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except NotARegularFile as exc:
        raise ConfigError(f"{path} is {exc.kind}, not a regular file",
                          f"Replace it with a regular file, or {aside}") from exc
    except FileTooLarge as exc:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB, too large "
                          "for a config file", f"Shrink it, or {aside}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", "Check its permissions") from exc


#: How deeply a config file may nest objects and arrays: flow's own keys need 3 levels, kits'
#: and plugins' sections a few more. Past it the file is refused with one line, never a
#: RecursionError from a parser or from code walking the data later.
MAX_CONFIG_DEPTH = 32


def _unreadable(exc: BaseException) -> str:
    """Why a parser gave up on a file that is well-formed text: too deep, or a huge number."""
    if isinstance(exc, RecursionError):
        return "it nests objects or arrays too deeply"
    return f"it holds a number too large to read ({str(exc).split(';')[0].strip()})"


def shape_limit_problem(data: Any) -> str | None:
    """What makes parsed config data unusable although it parsed, if anything: nesting deeper
    than ``MAX_CONFIG_DEPTH`` or a string that is not valid Unicode (a lone surrogate from a
    ``\ud800`` escape, which fails later wherever flow writes or prints it). Iterative, so
    that no depth makes it recurse."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            items: Any = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            items = node
        else:
            items = [node]
            depth -= 1
        if depth > MAX_CONFIG_DEPTH:
            return f"it nests objects or arrays more than {MAX_CONFIG_DEPTH} levels deep"
        for item in items:
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return f"it holds a string that is not valid Unicode: {ascii(item)[:60]}"
            elif isinstance(item, (dict, list)):
                stack.append((item, depth + 1))
    return None


def _json_error(path: str | Path, exc: json.JSONDecodeError) -> ConfigError:
    return ConfigError(
        f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
        _REPAIR,
    )


def validate_global(data: Any, path: str | Path) -> dict[str, Any]:
    """Check the shape of ``config.json`` and return it with defaults filled in.

    Errors name the offending key (``buildKits[1].name``) so the fix is obvious.
    """

    def bad(key: str, expected: str) -> ConfigError:
        return ConfigError(f"{path}: key '{key}' must be {expected}", _REPAIR)

    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object", _REPAIR)
    out = dict(data)
    for key, value in _defaults().items():
        out.setdefault(key, value)
    if not isinstance(out["schemaVersion"], int) or isinstance(out["schemaVersion"], bool):
        raise bad("schemaVersion", "an integer")
    if out["schemaVersion"] > SCHEMA_VERSION:
        raise ConfigError(
            f"{path} has schemaVersion {out['schemaVersion']}, newer than this flow understands "
            f"({SCHEMA_VERSION})",
            "Upgrade flowcore",
        )
    if out["activeBuildKit"] is not None and not isinstance(out["activeBuildKit"], str):
        raise bad("activeBuildKit", "a string or null")
    if not isinstance(out["buildKits"], list):
        raise bad("buildKits", "a list")
    seen: set[str] = set()
    for i, kit in enumerate(out["buildKits"]):
        where = f"buildKits[{i}]"
        if not isinstance(kit, dict):
            raise bad(where, "an object")
        if not isinstance(kit.get("name"), str) or not kit["name"]:
            raise bad(f"{where}.name", "a non-empty string")
        if kit["name"] in seen:
            raise ConfigError(f"{path}: kit '{kit['name']}' is listed twice in buildKits", _REPAIR)
        seen.add(kit["name"])
        if not isinstance(kit.get("installed", False), bool):
            raise bad(f"{where}.installed", "true or false")
        plugins = kit.get("plugins", [])
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            raise bad(f"{where}.plugins", "a list of strings")
    if not isinstance(out["plugins"], list) or not all(isinstance(p, str) for p in out["plugins"]):
        raise bad("plugins", "a list of strings")
    if not isinstance(out["lastUpdateDate"], (int, float)) or isinstance(
        out["lastUpdateDate"], bool
    ):
        raise bad("lastUpdateDate", "a number (milliseconds since the epoch)")
    for key, is_list in _SOURCE_KEYS_GLOBAL.items():
        if key in out:
            from flowcore.config.package_source import shape_problem

            problem = shape_problem(out[key], is_list)
            if problem:
                raise ConfigError(f"{path}: key '{key}' must be {problem}",
                                  f"Change it with: flow config set {key} VALUE")
    return out


def load_global(path: str | Path | None = None) -> GlobalConfig:
    """Read and validate ``config.json``. A missing file is an empty config; nothing is created."""
    path = path or paths.global_config_file()
    raw = _read_config(path, "move it aside to start from an empty config")
    if raw is None:
        return GlobalConfig(path, _defaults(), exists=False)
    try:
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise _json_error(path, exc) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text", _REPAIR) from exc
    except (RecursionError, ValueError) as exc:  # nesting past the parser's stack; a number
        raise ConfigError(f"{path} cannot be read: {_unreadable(exc)}", _REPAIR) from None
    problem = shape_limit_problem(data)
    if problem:
        raise ConfigError(f"{path} cannot be used: {problem}", _REPAIR)
    return GlobalConfig(path, validate_global(data, path), exists=True)


def update_global(
    mutate: Callable[[dict[str, Any]], Any], path: str | Path | None = None
) -> GlobalConfig:
    """Apply ``mutate`` to the global config under the inter-process lock and write it atomically.

    The file is re-read inside the lock, so concurrent writers never lose each other's keys. If
    ``mutate`` raises, or its result does not validate, nothing is written.
    """
    import copy

    path = path or paths.global_config_file()
    with file_lock(path):
        current = load_global(path)
        data = copy.deepcopy(current.data)
        mutate(data)
        data = validate_global(data, path)
        if data != current.data or not current.exists:
            text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
            remove_stale_temp_files(path)
            atomic_write_bytes(path, text.encode("utf-8"))
        return GlobalConfig(path, data, exists=True)


def record_update_check(when_ms: int, latest: str | None = None) -> None:
    """Record when flow last looked for a newer flowcore and, if it found one, its version.

    Called by the background update check, which runs without an effective view.
    """
    def mutate(data: dict[str, Any]) -> None:
        data["lastUpdateDate"] = when_ms
        if latest:
            data["latestVersion"] = latest

    update_global(mutate)


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating the intermediate objects."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"cannot set '{key}': '{part}' holds a {type(child).__name__}, not an object",
                "Choose another key",
            )
        node = child
    node[parts[-1]] = value


# --------------------------------------------------------------------------------------------
# Project config ([tool.flow] in pyproject.toml, else flow.toml)
# --------------------------------------------------------------------------------------------

PYPROJECT = "pyproject.toml"
FLOW_TOML = "flow.toml"


class ProjectConfig:
    """A project's flow settings and where they came from.

    ``data`` is the ``[tool.flow]`` table (from ``flow.toml`` it may also be written as a bare
    top-level table; both forms are accepted).
    """

    def __init__(self, root: str | os.PathLike[str], file: str | os.PathLike[str],
                 data: dict[str, Any]) -> None:
        self.root = Path(root)
        self.file = Path(file)
        self.data = data

    @property
    def buildkit(self) -> str | None:
        return self.data.get("buildkit")

    @property
    def plugins(self) -> list[str]:
        return list(self.data.get("plugins", []))

    def section(self, short_name: str) -> dict[str, Any]:
        """A kit's or plugin's own section, ``[tool.flow.<short_name>]``."""
        value = self.data.get(short_name, {})
        return value if isinstance(value, dict) else {}


_PROJECT_FIX = "move it out of the project's folders"


def _read_project_text(path: str | Path) -> str | None:
    raw = _read_config(path, _PROJECT_FIX)
    try:
        return None if raw is None else raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text", "Re-save it as UTF-8") from exc


def _parse_toml(path: str | Path, text: str) -> dict[str, Any]:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", "Fix the file's syntax") from exc
    except (RecursionError, ValueError) as exc:  # nesting past the parser's stack; a number
        raise ConfigError(f"{path} cannot be read: {_unreadable(exc)}", "Fix the file") from None
    problem = shape_limit_problem(data)
    if problem:
        raise ConfigError(f"{path} cannot be used: {problem}", "Fix the file")
    return data


def _flow_table(path: str | Path) -> dict[str, Any] | None:
    """The flow table of ``path``, or ``None`` when the file declares none (or does not exist)."""
    if os.path.basename(path) == PYPROJECT:
        # Cheap pre-check: most pyproject.toml files up the tree have no flow table.
        try:
            raw = _read_config(path, _PROJECT_FIX)
        except ConfigError as exc:
            if isinstance(exc.__cause__, (NotARegularFile, FileTooLarge)):
                raise
            return None  # unreadable: not this project's config
        if raw is None or b"flow" not in raw:
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text", "Re-save it as UTF-8") from exc
        table = _parse_toml(path, text).get("tool", {}).get("flow")
        return table if isinstance(table, dict) else None
    project_text = _read_project_text(path)
    if project_text is None:
        return None
    doc = _parse_toml(path, project_text)
    table = doc.get("tool", {}).get("flow") if isinstance(doc.get("tool"), dict) else None
    return table if isinstance(table, dict) else doc


def validate_project(table: dict[str, Any], path: str | Path) -> dict[str, Any]:
    def bad(key: str, expected: str) -> ConfigError:
        return ConfigError(f"{path}: [tool.flow] key '{key}' must be {expected}", "Fix the file")

    if "buildkit" in table and not isinstance(table["buildkit"], str):
        raise bad("buildkit", "a string (a kit's distribution name)")
    plugins = table.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise bad("plugins", "a list of strings")
    for key, is_list in _SOURCE_KEYS_PROJECT.items():
        if key in table:
            from flowcore.config.package_source import shape_problem

            problem = shape_problem(table[key], is_list)
            if problem:
                raise bad(key, problem.replace(", or null", ""))
    return table


def _project_in(directory: str) -> ProjectConfig | None:
    for name in (PYPROJECT, FLOW_TOML):
        candidate = os.path.join(directory, name)
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if not stat.S_ISDIR(mode):  # a FIFO or device is an error (_read_config), a folder is no config
            table = _flow_table(candidate)
            if table is not None:
                return ProjectConfig(directory, candidate, validate_project(table, candidate))
    return None


def find_project(
    cwd: str | Path | None = None, root: Path | None = None, config: Path | None = None
) -> ProjectConfig | None:
    """Find the project config, with FIS's semantics for the overrides.

    * neither given: walk up from ``cwd``; the first directory holding a flow config is the root.
    * ``root`` given: the config is looked for in ``root`` only (unless ``config`` is given).
    * ``config`` given: that file is the config; the root is its folder (unless ``root`` is given).
    """
    if config is not None:
        config = config.expanduser().absolute()
        if not config.exists():
            raise ConfigError(f"config file {config} does not exist", "Check the --config path")
        if config.is_dir():
            raise ConfigError(f"config file {config} is a directory", "Pass a file to --config")
        table = _flow_table(config)
        if table is None:
            raise ConfigError(
                f"{config} has no [tool.flow] table", "Add one, or pass another --config"
            )
        project_root = root.expanduser().absolute() if root else config.parent
        return ProjectConfig(project_root, config, validate_project(table, config))
    if root is not None:
        root = root.expanduser().absolute()
        if not root.is_dir():
            raise ConfigError(f"project root {root} is not a directory", "Check the --root path")
        found = _project_in(str(root))
        if found is None:
            raise ConfigError(
                f"{root} has no flow project config",
                "Add [tool.flow] to its pyproject.toml or create flow.toml there",
            )
        return found
    here = os.path.abspath(cwd) if cwd is not None else os.getcwd()
    while True:
        found = _project_in(here)
        if found is not None:
            return found
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _project_lock_path(project: ProjectConfig) -> Path:
    from flowcore._base.fileio import make_state_dir

    state = make_state_dir(project.root / ".flow")
    if project.file.parent == project.root:
        return state / f"{project.file.name}.lock"
    import hashlib

    digest = hashlib.sha256(str(project.file).encode()).hexdigest()[:12]
    return state / f"{project.file.name}-{digest}.lock"


def add_project_key(table: Any, key: str, value: Any, after: tuple[str, ...] = ()) -> None:
    """Add ``key`` to a tomlkit table among its settings: right after the first key of ``after``
    that is there, else after the last plain key (at the top when there is none). Plain
    assignment would append it at the end of the table's text, below a comment that introduces
    the sub-table that follows (``# kit settings`` above ``[tool.flow.python]``)."""
    from tomlkit.container import Container
    from tomlkit.items import AoT, Table

    container = table if isinstance(table, Container) else getattr(table, "value", None)
    body = getattr(container, "body", None)
    if key not in table and isinstance(container, Container) and body:
        plain = [i for i, (k, v) in enumerate(body)
                 if k is not None and not isinstance(v, (Table, AoT))]
        anchors = [i for i, (k, _) in enumerate(body) if k is not None and k.key in after]
        at = (anchors[0] if anchors else (plain[-1] if plain else -1)) + 1
        if at < len(body):
            try:
                container._insert_at(at, key, value)
                return
            except (ValueError, KeyError):
                pass
    table[key] = value


def edit_project(project: ProjectConfig, mutate: Callable[[Any], Any]) -> None:
    """Change a project's flow table in place, keeping the file's comments and formatting.

    ``mutate`` receives the tomlkit table for ``[tool.flow]`` (created if missing). The write is
    atomic and locked like the global config; the lock file lives in the project's ``.flow/``
    (git-ignored), not next to the user's file.
    """
    import tomlkit

    with file_lock(project.file, _project_lock_path(project)):
        text = _read_project_text(project.file)
        if text is None:
            raise ConfigError(f"{project.file} no longer exists", "Run the command again")
        doc = tomlkit.parse(text)
        if project.file.name == FLOW_TOML and "tool" not in doc:
            table = doc
        else:
            tool = doc.setdefault("tool", tomlkit.table(is_super_table=True))
            table = tool.setdefault("flow", tomlkit.table())
        mutate(table)
        text = tomlkit.dumps(doc)
        new_data = validate_project(table.unwrap(), project.file)
        remove_stale_temp_files(project.file)
        atomic_write_bytes(project.file, text.encode("utf-8"))
    project.data = new_data


# --------------------------------------------------------------------------------------------
# The effective view for one run
# --------------------------------------------------------------------------------------------


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


@dataclass(slots=True)
class PluginRef:
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
        if key in _SOURCE_KEYS_GLOBAL:
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
