"""The toolchain a build sees: the versions of node, npm, python and uv on this server.

Why: a build's output depends on the tools that made it as much as on its source, so the build
cache's key (``tasks/build_key.py``), the install cache's key (``runtime/install_cache.py``) and
the provenance statement all name them. The sandbox binds the host's ``/usr`` and the server's
``PATH``, so the versions found here are the ones the build runs. They are asked once per process
(a version changes when the operator upgrades a package, which restarts the server) and in a
thread: ``npm --version`` alone takes a tenth of a second.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
from functools import cache

from flowcore.api import uv_binary

#: program -> the arguments that print its version
_PROBES = {"node": ["--version"], "npm": ["--version"], "uv": ["--version"]}
_MAX_VERSION = 200  # characters kept of what a program prints


@cache
def versions() -> dict[str, str]:
    """``{"node": "v22.1.0", "npm": "10.7.0", "python": "3.12.3", "uv": "uv 0.5.1"}``; a program
    that is missing is absent from the mapping (blocking: call ``versions_async`` on the loop)."""
    found = {"python": platform.python_version()}
    for program, args in _PROBES.items():
        path = uv_binary() if program == "uv" else shutil.which(program, path=os.environ.get("PATH"))
        if not path:
            continue
        try:
            done = subprocess.run([path, *args], capture_output=True, text=True, timeout=30,
                                  env={"PATH": os.environ.get("PATH", os.defpath), "HOME": "/nonexistent",
                                       "npm_config_update_notifier": "false"})
        except (OSError, subprocess.SubprocessError):
            continue
        text = done.stdout.strip().splitlines()[0][:_MAX_VERSION] if done.stdout.strip() else ""
        if done.returncode == 0 and text:
            found[program] = text
    return found


async def versions_async() -> dict[str, str]:
    """``versions()`` without blocking the event loop (the first call runs the programs)."""
    return dict(await asyncio.to_thread(versions))
