"""Where flow keeps its files. One module, so that no other module invents a path.

``FLOW_HOME`` (default ``~/.flow``) holds the global config (the source of truth for what is
installed), the flow-managed environment that kits and plugins are installed into, and caches
that can always be rebuilt. A project's own flow files live under ``<project root>/.flow/``.

Every place is a ``pathlib.Path``.
"""

from __future__ import annotations

import os
from pathlib import Path


def flow_home() -> Path:
    """The global home (``FLOW_HOME``, default ``~/.flow``), read from the environment on every
    call so tests can point it anywhere."""
    env = os.environ.get("FLOW_HOME")
    if not env:
        return Path.home() / ".flow"
    env = os.path.expanduser(env)
    return Path(os.path.normpath(env if os.path.isabs(env) else os.path.join(os.getcwd(), env)))


def global_config_file() -> Path:
    """``config.json``: the global config, the source of truth for what is installed."""
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


def project_env_dir(project_root: str | os.PathLike[str]) -> Path:
    """The flow-managed environment for plugins installed into one project."""
    return Path(project_root, ".flow", "env")


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` as flow shows it in a message: relative to the working directory (``.``,
    ``./sub``) when at or below it, else as it is."""
    text = os.fspath(path)
    try:
        rel = os.path.relpath(text)
    except (OSError, ValueError):
        return text
    if rel == os.curdir:
        return os.curdir
    return text if rel.startswith(os.pardir) else f"./{rel}"


def log_dir() -> Path:
    """Where debug logs with full tracebacks go (platformdirs' user log dir)."""
    import platformdirs

    return Path(platformdirs.user_log_dir("flow", appauthor=False))


#: errno names that mean "flow cannot write there" (read-only, no permission, a file where a
#: folder should be, full): a place to move, not a bug to report with a traceback.
_UNWRITABLE = ("EROFS", "EACCES", "EPERM", "ENOTDIR", "EEXIST", "ENOSPC", "EDQUOT")


def _inside(path: str, top: str) -> bool:
    path, top = os.path.abspath(path), os.path.abspath(top)
    return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


def unwritable_home(exc: OSError) -> tuple[str, str] | None:
    """``(cause, fix)`` when ``exc`` is flow failing to write below ``FLOW_HOME`` (a read-only
    or foreign home, a file in its place): one line naming the home and ``FLOW_HOME``, which
    moves it. ``None`` for any other error."""
    import errno

    if exc.errno not in {getattr(errno, name, None) for name in _UNWRITABLE} - {None}:
        return None
    home = str(flow_home())
    for name in (exc.filename, exc.filename2):
        if not isinstance(name, (str, bytes, os.PathLike)):
            continue
        name = os.fsdecode(name)
        if _inside(name, home) or _inside(os.path.realpath(name), os.path.realpath(home)):
            rel = os.path.relpath(name, home) if _inside(name, home) else name
            where = exc.strerror if rel == "." else f"{rel}: {exc.strerror}"
            return (f"cannot write to flow's home {home} ({where})",
                    "Make it writable, or move it: set FLOW_HOME to a writable directory")
    return None
