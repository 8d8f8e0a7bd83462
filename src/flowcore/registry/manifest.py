"""The command manifest: what ``flow --help`` and dispatch know without importing any plugin.

Building the command tree means importing every kit and plugin, which is what made IMFLOW's start
take seconds. flow does it once and caches the result as JSON under ``$FLOW_HOME/cache``: command
names, short help, owners, and per plugin its entry points and the hooks it implements. The cache
is keyed by what decides which plugins load (scope, project root, active kit,
``FLOW_LOAD_PLUGINS``) and carries a *fingerprint* of everything that could change its content:
flowcore's version, the config files, the FLOW_LOAD_PLUGINS value, the distributions in the
managed environments (dist-info names, ``entry_points.txt`` and ``direct_url.json`` stats, so an
install, removal, upgrade or editable reinstall shows), the mtime of flow's own site-packages,
and the files of every loaded plugin module (so editing an editable plugin shows too). Computing
it is a few ``listdir``/``stat`` calls; nothing here imports pluggy or ``importlib.metadata``.
"""

from __future__ import annotations

import binascii
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowcore._base import paths
from flowcore._base.version import __version__
from flowcore.plugins.records import CommandRecord, Failure, PluginRecord, stat_stamp

FORMAT = 2


class Manifest:
    """The cached command tree of one load scope (see the module docs)."""

    def __init__(
        self,
        key: str,
        fingerprint: list[Any],
        kit: dict[str, Any] | None = None,
        plugins: list[PluginRecord] | None = None,
        commands: list[CommandRecord] | None = None,
        failures: list[Failure] | None = None,
        warnings: list[str] | None = None,
        env_dirs: list[str] | None = None,
    ) -> None:
        self.key = key
        self.fingerprint = fingerprint
        self.kit = kit
        self.plugins = plugins or []
        self.commands = commands or []
        self.failures = failures or []
        self.warnings = warnings or []
        self.env_dirs = env_dirs or []

    def command(self, name: str) -> CommandRecord | None:
        return next((c for c in self.commands if c.name == name), None)

    def plugin(self, name: str) -> PluginRecord | None:
        return next((p for p in self.plugins if p.name == name), None)

    def failed_command(self, name: str) -> Failure | None:
        """The failed kit or plugin that used to provide command ``name``, if any."""
        return next((f for f in self.failures if name in f.commands), None)

    def implementing(self, *hooks: str) -> list[PluginRecord]:
        return [p for p in self.plugins if any(h in p.hooks for h in hooks)]

    def to_json(self) -> bytes:
        data = {
            "format": FORMAT, "key": self.key, "fingerprint": self.fingerprint, "kit": self.kit,
            "plugins": [p._asdict() for p in self.plugins],
            "commands": [c._asdict() for c in self.commands],
            "failures": [f._asdict() for f in self.failures],
            "warnings": self.warnings, "env_dirs": self.env_dirs,
        }
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest | None:
        try:
            data = json.loads(raw)
            if data.pop("format", None) != FORMAT:
                return None
            return cls(
                key=data["key"],
                fingerprint=data["fingerprint"],
                kit=data.get("kit"),
                plugins=[PluginRecord(**p) for p in data["plugins"]],
                commands=[CommandRecord(**c) for c in data["commands"]],
                failures=[Failure(**{**f, "commands": tuple(f.get("commands", ()))}) for f in data["failures"]],
                warnings=list(data["warnings"]),
                env_dirs=list(data["env_dirs"]),
            )
        except (ValueError, KeyError, TypeError):
            return None  # an unreadable cache is a missing cache


def manifest_path(key: str) -> Path:
    """Where the manifest for ``key`` lives (one file per key; deleting any is always safe)."""
    return paths.cache_dir() / f"commands-{binascii.crc32(key.encode()):08x}.json"


def _read(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _env_listing(site_packages: str | Path) -> list[Any]:
    """dist-info names of one environment, with the stats of the files that name entry points."""
    where = Path(site_packages)
    try:
        names = sorted(p.name for p in where.iterdir() if p.name.endswith(".dist-info"))
    except OSError:
        return [str(where), None]
    return [
        str(where),
        [[n, stat_stamp(where / n / "entry_points.txt"), stat_stamp(where / n / "direct_url.json")]
         for n in names],
    ]


def own_site_packages() -> Path:
    """The site-packages of the interpreter running flow (kits may be installed there too)."""
    from flowcore.config.environment import site_packages_dir

    return site_packages_dir(sys.prefix)


def fingerprint(config_files: Sequence[str | Path], site_dirs: Sequence[str | Path],
                load_plugins: str | None) -> list[Any]:
    """Everything the manifest's content depends on, apart from the plugin files themselves."""
    return [
        __version__,
        sys.version_info[:2],
        [[str(p), stat_stamp(p)] for p in config_files],
        load_plugins,
        [_env_listing(sp) for sp in site_dirs],
        stat_stamp(own_site_packages()),
    ]


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value))


def load(key: str, current_fingerprint: list[Any]) -> Manifest | None:
    """The cached manifest for ``key`` if it is still valid, else ``None``."""
    try:
        raw = _read(manifest_path(key))
    except OSError:
        return None
    manifest = Manifest.from_json(raw)
    if manifest is None or manifest.key != key:
        return None
    if manifest.fingerprint != _normalise(current_fingerprint):
        return None
    for plugin in manifest.plugins:
        for entry in plugin.files:
            path, _, stamp = entry.rpartition("|")
            if str(stat_stamp(path)) != stamp:
                return None
    return manifest


def load_stale(key: str) -> Manifest | None:
    """The cached manifest for ``key`` whether or not it is still valid (what a rebuild carries
    over: the commands of plugins that loaded then and fail now)."""
    try:
        manifest = Manifest.from_json(_read(manifest_path(key)))
    except OSError:
        return None
    return manifest if manifest is not None and manifest.key == key else None


def save(manifest: Manifest) -> None:
    """Write the manifest atomically; a cache that cannot be written is simply not cached."""
    from flowcore._base.fileio import atomic_write_bytes

    manifest.fingerprint = _normalise(manifest.fingerprint)
    try:
        atomic_write_bytes(manifest_path(manifest.key), manifest.to_json())
    except OSError:
        pass
