"""Layout of a flow-managed environment, shared by the PackageManager (which creates and fills
it) and the PluginSystem (which imports from it).

A managed environment is a virtual environment under ``$FLOW_HOME/env`` (global scope) or
``<project>/.flow/env`` (project scope). It is never the interpreter that runs flow and never the
user's project environment.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowcore.config.view import ConfigView

#: The entry point groups flow loads from: a build kit declares ``flow.kits``, a plugin
#: ``flow.plugins``. Defined here only; the installer, the doctor and the PluginSystem import them.
KIT_GROUP = "flow.kits"
PLUGIN_GROUP = "flow.plugins"
ENTRY_POINT_GROUPS = (KIT_GROUP, PLUGIN_GROUP)


#: Where a managed environment keeps its packages, below its root.
_SITE_PACKAGES = os.path.join("lib", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                              "site-packages")


def site_packages_dir(env_dir: str | os.PathLike[str]) -> Path:
    """The ``site-packages`` directory of the managed environment at ``env_dir``."""
    return Path(env_dir, _SITE_PACKAGES)


def add_to_sys_path(env_dir: str | os.PathLike[str]) -> bool:
    """Make the environment importable in this process, after flowcore's own packages.

    Appending (not prepending) means a plugin can never shadow click, pluggy or flowcore itself.
    ``.pth`` files are processed, so editable installs work. Returns False when there is no
    environment yet.
    """
    sp = str(site_packages_dir(env_dir))
    if not os.path.isdir(sp):
        return False
    if sp not in sys.path:
        import site

        site.addsitedir(sp)
    return True


def canonical_name(name: str) -> str:
    """A distribution name as PEP 503 normalises it (``Flow_Plugin.X`` -> ``flow-plugin-x``).

    The config, the installers and the PluginSystem compare names only in this form. Written
    out (it is one regular expression) rather than imported from ``packaging``, so the dispatch
    path of a plugin command does not import ``packaging``.
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def short_name_of(dist_name: str) -> str:
    """Default short name: the distribution name without ``flow-kit-`` / ``flow-plugin-`` (the
    name of its config section and of its ``[tool.flow]`` table)."""
    for prefix in ("flow-kit-", "flow-plugin-"):
        if dist_name.startswith(prefix) and len(dist_name) > len(prefix):
            return dist_name[len(prefix):]
    return dist_name


def env_dirs_for(config: ConfigView) -> list[Path]:
    """The managed environments a run can import from: the project's first, then the global one."""
    from flowcore._base import paths

    dirs = []
    if config.project_env_usable and config.project is not None:  # only in a trusted project
        dirs.append(paths.project_env_dir(config.project.root))
    dirs.append(paths.global_env_dir())
    return dirs


def uv_binary() -> str | None:
    """The uv binary: the one flowcore depends on (the ``uv`` package), else one on ``PATH``.

    Kits that run uv (builds, test environments) call this instead of looking for it
    themselves; ``None`` means there is no uv and callers fall back to pip/venv.
    """
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        import shutil

        return shutil.which("uv")
