"""A flow-managed environment for tests, made without the PackageManager.

Creates the venv at ``$FLOW_HOME/env`` (or a project's ``.flow/env``) the way the PackageManager
lays it out (a ``.pth`` makes flowcore's own environment visible), installs wheels into it with
uv, offline, and writes ``config.json`` directly. Once ``flow plugin add`` exists, tests may use
it instead; this module keeps the PluginSystem's tests independent of the installer.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path
from typing import Any

from wheelfactory import build_wheel, plugin_wheel

__all__ = ["ManagedEnv", "build_wheel", "plugin_wheel", "write_config", "make_env", "uv_env"]


def uv_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_INDEX", "UV_EXTRA", "UV_FIND"))}
    env.update(UV_NO_CONFIG="1", UV_OFFLINE="1", PIP_CONFIG_FILE=os.devnull)
    return env


def _uv() -> str:
    candidate = Path(sys.executable).with_name("uv")
    return str(candidate) if candidate.exists() else (shutil.which("uv") or "uv")


def make_env(env_dir: Path, *, visible: bool = True) -> Path:
    """A venv at ``env_dir`` (with a ``.pth`` to flowcore's site-packages if ``visible``)."""
    subprocess.run([_uv(), "venv", "-q", "--python", sys.executable, str(env_dir)],
                   check=True, env=uv_env())
    from flowcore.config.environment import site_packages_dir

    sp = site_packages_dir(env_dir)
    if visible:
        own = [p for p in site.getsitepackages() if Path(p).is_dir()]
        (sp / "_flow_core_env.pth").write_text("\n".join(own) + "\n")
    return env_dir


def install(env_dir: Path, *wheels: Path) -> None:
    """Install ``wheels`` into ``env_dir`` offline, without dependencies."""
    subprocess.run(
        [_uv(), "pip", "install", "-q", "--python", str(env_dir / "bin" / "python"),
         "--no-deps", "--offline", *map(str, wheels)],
        check=True, env=uv_env(),
    )


def uninstall(env_dir: Path, *names: str) -> None:
    subprocess.run(
        [_uv(), "pip", "uninstall", "-q", "--python", str(env_dir / "bin" / "python"), *names],
        check=True, env=uv_env(),
    )


def write_config(flow_home: Path, **data: Any) -> Path:
    """Write ``$FLOW_HOME/config.json`` from keyword arguments (camelCase keys as in the file)."""
    flow_home.mkdir(parents=True, exist_ok=True)
    path = flow_home / "config.json"
    path.write_text(json.dumps({"schemaVersion": 1, **data}, indent=2))
    return path


class ManagedEnv:
    """The global managed env of a test's FLOW_HOME plus a folder for the wheels it installs."""

    def __init__(self, flow_home: Path, wheels: Path) -> None:
        self.flow_home = flow_home
        self.dir = flow_home / "env"
        self.wheels = wheels
        if not self.dir.exists():
            make_env(self.dir)

    def add_plugin(self, dist: str, body: str, **kwargs: Any) -> Path:
        wheel = plugin_wheel(self.wheels, dist, body, **kwargs)
        install(self.dir, wheel)
        return wheel

    def add_wheel(self, dist: str, files: dict[str, str], **kwargs: Any) -> Path:
        wheel = build_wheel(self.wheels, dist, files, **kwargs)
        install(self.dir, wheel)
        return wheel

    def remove(self, *names: str) -> None:
        uninstall(self.dir, *names)

    def config(self, *, kit: str | None = None, kit_plugins: list[str] | None = None,
               plugins: list[str] | None = None, **extra: Any) -> Path:
        kits = [{"name": kit, "installed": True, "plugins": kit_plugins or []}] if kit else []
        return write_config(self.flow_home, activeBuildKit=kit, buildKits=kits,
                            plugins=plugins or [], **extra)
