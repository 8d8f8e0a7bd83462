"""ConfigSystem: the global config, the project config, and the effective view of both.

Everything here runs before any kit or plugin loads, so a broken file is reported (file,
position, key, fix) before it can break anything else. The global ``config.json`` is the source
of truth for what is installed; the project config (``[tool.flow]`` in ``pyproject.toml``, else
``flow.toml``) says which kit and plugins a project wants. ``EffectiveConfig`` combines them with
the command line once per run, so that other modules never re-derive the active kit or the
plugins to load.

One job per module, each importing only those listed before it (never this package):

* ``schema``: every key, its type, default and help, declared once;
* ``reading``: reading a config file within bounds (size, regular file, nesting);
* ``global_config``: ``config.json``; ``project_config``: ``[tool.flow]``;
* ``view``: what the modules below ``effective`` read of a run;
* ``environment``: the managed environments' layout; ``package_source``: where kits and plugins
  are downloaded from; ``trust``: which projects may run their own code;
* ``effective``: the effective view of one run and every edit of either file;
* ``unknown_keys``: warnings about keys nothing reads; ``reference``: the schema as
  docs/configuration.md shows it.

This module only re-exports the names the other layers use.
"""

from __future__ import annotations

from flowcore.config.effective import EffectiveConfig, PluginRef, RunOptions, load_effective
from flowcore.config.global_config import (
    MAX_CONFIG_BYTES,
    GlobalConfig,
    KitEntry,
    load_global,
    record_update_check,
    set_dotted,
    update_global,
    validate_global,
)
from flowcore.config.project_config import (
    FLOW_TOML,
    PYPROJECT,
    ProjectConfig,
    add_project_key,
    edit_project,
    find_project,
    validate_project,
)
from flowcore.config.schema import (
    GLOBAL_KEYS,
    KIT_ENTRY_KEYS,
    PROJECT_KEYS,
    PROJECT_SOURCE_KEYS,
    SCHEMA_VERSION,
)

__all__ = [
    "FLOW_TOML", "GLOBAL_KEYS", "KIT_ENTRY_KEYS", "MAX_CONFIG_BYTES", "PROJECT_KEYS",
    "PROJECT_SOURCE_KEYS", "PYPROJECT", "SCHEMA_VERSION", "EffectiveConfig", "GlobalConfig",
    "KitEntry", "PluginRef", "ProjectConfig", "RunOptions", "add_project_key", "edit_project",
    "find_project", "load_effective", "load_global", "record_update_check", "set_dotted",
    "update_global", "validate_global", "validate_project",
]
