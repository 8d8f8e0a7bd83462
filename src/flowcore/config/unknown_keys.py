"""Warnings about keys of the config files that nothing reads: typos, named with the nearest key
that something does read.

The known keys come from the schema (``flowcore.config.schema``) for flow's own keys and from
each kit's ``config_schema`` (``flow_kit_info``, cached in the command manifest) for its own
section, so a kit is never imported to check its section. A warning is one line on stderr, once
per file and key in a process; nothing here ever fails a command.

* :func:`has_unknown_keys`: the cheap pre-check every run makes (difflib is imported past it).
* :func:`warn_unknown_keys`: flow's own keys of both files.
* :func:`warn_kit_section`: ``[tool.flow.<kit>]`` and ``kitConfig.<kit>`` against the kit's schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flowcore.config.environment import short_name_of
from flowcore.config.schema import GLOBAL_KEYS, KIT_ENTRY_KEYS, PROJECT_KEYS

if TYPE_CHECKING:
    from flowcore.config.effective import EffectiveConfig

_warned: set[str] = set()  # one warning per key and file per process (temporary Flows repeat)


def _sections(config: EffectiveConfig) -> set[str]:
    """The names of ``[tool.flow]``'s tables that belong to a kit or plugin flow knows of."""
    g = config.global_config
    plugins = config.project.plugins if config.project is not None else []
    return {short_name_of(n) for n in (*g.installed_kits, *g.all_plugins, *plugins)}


def has_unknown_keys(config: EffectiveConfig) -> bool:
    """Whether either file holds a key beyond those flow knows (and, in ``[tool.flow]``, beyond
    the tables named after its kits' and plugins' short names)."""
    data = config.global_config.data
    if any(k not in GLOBAL_KEYS for k in data):
        return True
    if any(set(kit) - KIT_ENTRY_KEYS for kit in data.get("buildKits", ())):
        return True
    if config.project is None:
        return False
    known = PROJECT_KEYS | _sections(config)
    return any(k not in known for k in config.project.data)


def warn_key(where: str, key: str, known: Iterable[str], cutoff: float = 0.6) -> None:
    """``unknown key 'KEY' in WHERE, ignored. Did you mean ...?`` (or the known keys)."""
    from flowcore._base.errors import warn
    from flowcore._base.suggest import closest

    line = f"{where}|{key}"
    if line in _warned:
        return
    _warned.add(line)
    match = closest(key, known, cutoff)
    if match:
        warn(f"unknown key '{key}' in {where}, ignored", f"Did you mean '{match}'?")
    else:
        warn(f"unknown key '{key}' in {where}, ignored",
             f"Known keys: {', '.join(sorted(known))}")


def warn_unknown_keys(config: EffectiveConfig) -> None:
    """Warn about keys of the config files flow does not know, naming the nearest known one.

    ``[tool.flow]``: any plain key flow does not know is reported, and a table only when its
    name is close to a known kit's or plugin's (it may belong to one not installed here).
    ``config.json``: every unknown key of a ``buildKits`` entry; at the top level (where users
    and plugins may keep their own keys) only a near miss of one of flow's keys
    (``activeBuildkit``).
    """
    from flowcore._base.suggest import closest

    g = config.global_config
    for key in g.data:
        if key not in GLOBAL_KEYS and closest(key, GLOBAL_KEYS, 0.8) and not isinstance(g.data[key], dict):
            warn_key(str(g.path), key, GLOBAL_KEYS, 0.8)
    for i, kit in enumerate(g.data.get("buildKits", [])):
        for key in kit:
            if key not in KIT_ENTRY_KEYS:
                warn_key(f"{g.path} (buildKits[{i}])", key, KIT_ENTRY_KEYS)
    project = config.project
    if project is None:
        return
    sections = _sections(config)
    where = f"[tool.flow] of {project.file}"
    for key, value in project.data.items():
        if key in PROJECT_KEYS or key in sections:
            continue
        if not isinstance(value, dict):
            warn_key(where, key, PROJECT_KEYS | sections)
        elif closest(key, sections, 0.8):
            warn_key(where, key, sections, 0.8)


def warn_kit_section(config: EffectiveConfig, kit_info: Mapping[str, Any] | None) -> None:
    """Warn about keys of the active kit's own section that its ``config_schema`` does not
    declare: ``[tool.flow.<short name>]`` of the project and ``kitConfig.<short name>`` of
    config.json. A kit that declares no schema is not checked (nothing says what it reads)."""
    if not kit_info:
        return
    schema = kit_info.get("config_schema")
    short = kit_info.get("short_name")
    if not isinstance(schema, Mapping) or not schema or not isinstance(short, str):
        return
    known = [k for k in schema if isinstance(k, str)]
    g = config.global_config
    sections = [(f"{g.path} (kitConfig.{short})", g.section("kitConfig", short))]
    if config.project is not None:
        sections.append((f"[tool.flow.{short}] of {config.project.file}",
                         config.project.section(short)))
    for where, section in sections:
        for key in section:
            if key not in known:
                warn_key(where, str(key), known)
