"""Where flow keeps its files. One module, so that no other module invents a path.

``FLOW_HOME`` (default ``~/.flow``) holds the global config (the source of truth for what is
installed), the flow-managed environment that kits and plugins are installed into, and caches
that can always be rebuilt. A project's own flow files live under ``<project root>/.flow/``.
"""

from __future__ import annotations

import os
from pathlib import Path


def flow_home() -> Path:
    """The global home, read from ``FLOW_HOME`` on every call so tests can point it anywhere."""
    env = os.environ.get("FLOW_HOME")
    return Path(env).expanduser().absolute() if env else Path.home() / ".flow"


def global_config_path() -> Path:
    return flow_home() / "config.json"


def cache_dir() -> Path:
    """Rebuildable caches (command manifests); deleting it is always safe."""
    return flow_home() / "cache"


def global_env_dir() -> Path:
    """The flow-managed environment for globally installed kits and plugins."""
    return flow_home() / "env"


def template_store_dir() -> Path:
    """Git repositories of the kits' and plugins' templates, one tag per version (for update)."""
    return flow_home() / "templates"


def project_env_dir(project_root: Path) -> Path:
    """The flow-managed environment for plugins installed into one project."""
    return project_root / ".flow" / "env"


def log_dir() -> Path:
    """Where debug logs with full tracebacks go (platformdirs' user log dir)."""
    import platformdirs

    return Path(platformdirs.user_log_dir("flow", appauthor=False))
