"""The global config, ``$FLOW_HOME/config.json``: the source of truth for what is installed.

Read and validated against the schema (``flowcore.config.schema``) before any kit or plugin
loads; written only under the file lock, atomically, re-read inside the lock, so concurrent
writers never lose each other's keys. Unknown keys are kept on every write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from flowcore._base import paths
from flowcore._base.errors import ConfigError
from flowcore._base.fileio import atomic_write_bytes, file_lock, remove_stale_temp_files
from flowcore.config.reading import (
    MAX_CONFIG_BYTES,
    REPAIR,
    json_error,
    read_config,
    shape_limit_problem,
    unreadable,
)
from flowcore.config.schema import GLOBAL, KIT_ENTRY, NO_DEFAULT, SCHEMA_VERSION, defaults, problem

__all__ = ["MAX_CONFIG_BYTES", "GlobalConfig", "KitEntry", "load_global", "record_update_check",
           "set_dotted", "update_global", "validate_global"]


class KitEntry(NamedTuple):  # a NamedTuple: on every start, ~5x cheaper to define than a dataclass
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



def validate_global(data: Any, path: str | Path) -> dict[str, Any]:
    """Check ``config.json`` against the schema (``schema.GLOBAL``) and return it with defaults
    filled in.

    Errors name the offending key (``buildKits[1].name``) so the fix is obvious; a key
    ``flow config set`` may change names that command as the fix.
    """

    def bad(key: str, expected: str, fix: str = REPAIR) -> ConfigError:
        return ConfigError(f"{path}: key '{key}' must be {expected}", fix)

    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object", REPAIR)
    out = dict(data)
    for key, value in defaults().items():
        out.setdefault(key, value)
    for spec in GLOBAL:
        if spec.name not in out or not spec.load_check:
            continue
        wrong = problem(spec, out[spec.name])
        if wrong:
            settable = not spec.managed_by and not spec.by_flow
            raise bad(spec.name, wrong,
                      f"Change it with: flow config set {spec.name} VALUE" if settable else REPAIR)
        if spec.name == "schemaVersion" and out["schemaVersion"] > SCHEMA_VERSION:
            raise ConfigError(
                f"{path} has schemaVersion {out['schemaVersion']}, newer than this flow "
                f"understands ({SCHEMA_VERSION})",
                "Upgrade flowcore",
            )
        if spec.name == "buildKits":
            _validate_kits(out["buildKits"], path, bad)
    return out


def _validate_kits(kits: list[Any], path: str | Path, bad: Callable[[str, str], ConfigError]) -> None:
    """Each ``buildKits[]`` entry against ``schema.KIT_ENTRY``; a kit listed twice is an error."""
    seen: set[str] = set()
    for i, kit in enumerate(kits):
        where = f"buildKits[{i}]"
        if not isinstance(kit, dict):
            raise bad(where, "an object")
        for spec in KIT_ENTRY:
            value = kit.get(spec.name, None if spec.default is NO_DEFAULT else spec.default)
            wrong = problem(spec, value)
            if wrong:
                raise bad(f"{where}.{spec.name}", wrong)
            if spec.name == "name":
                if value in seen:
                    raise ConfigError(f"{path}: kit '{value}' is listed twice in buildKits", REPAIR)
                seen.add(str(value))


def load_global(path: str | Path | None = None) -> GlobalConfig:
    """Read and validate ``config.json``. A missing file is an empty config; nothing is created."""
    path = path or paths.global_config_file()
    raw = read_config(path, "move it aside to start from an empty config")
    if raw is None:
        return GlobalConfig(path, defaults(), exists=False)
    try:
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise json_error(path, exc) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text", REPAIR) from exc
    except (RecursionError, ValueError) as exc:  # nesting past the parser's stack; a number
        raise ConfigError(f"{path} cannot be read: {unreadable(exc)}", REPAIR) from None
    problem = shape_limit_problem(data)
    if problem:
        raise ConfigError(f"{path} cannot be used: {problem}", REPAIR)
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

