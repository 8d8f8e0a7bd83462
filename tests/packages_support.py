"""Helpers for the PackageManager's tests: look inside FLOW_HOME and a managed environment."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from wheelfactory import plugin_wheel

_HELLO = ("@click.command()\ndef hello():\n    click.echo('hello')\n"
          "@hookimpl\ndef flow_register_commands(registry):\n    registry.add(hello)\n")


def site_packages(env_dir: Path) -> Path:
    from flowcore.config.environment import site_packages_dir

    return site_packages_dir(env_dir)


def env_dists(env_dir: Path) -> set[str]:
    """Names of the distributions installed in a managed environment (dist-info folders)."""
    sp = site_packages(env_dir)
    if not sp.is_dir():
        return set()
    return {p.name.split("-")[0].lower() for p in sp.glob("*.dist-info")}


def env_listing(env_dir: Path) -> set[str]:
    """Every top-level entry of the env's site-packages: a fingerprint for 'unchanged'."""
    sp = site_packages(env_dir)
    return {p.name for p in sp.iterdir()} if sp.is_dir() else set()


def read_config(flow_home: Path) -> dict:
    path = flow_home / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def config_bytes(flow_home: Path) -> bytes | None:
    path = flow_home / "config.json"
    return path.read_bytes() if path.exists() else None


def kit_wheel(dest: Path, name: str, version: str = "0.1.0", api: str = ">=1") -> Path:
    """A build kit distribution: one ``flow.kits`` entry point."""
    return plugin_wheel(dest, name, _HELLO, group="flow.kits", api=api, version=version)


def simple_plugin(dest: Path, name: str, kits: list[str] | None = None, **kw) -> Path:
    return plugin_wheel(dest, name, _HELLO, kits=kits, **kw)


def env_python_sees(env_dir: Path, module: str) -> str:
    """Where the managed env's interpreter imports ``module`` from."""
    out = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                          f"import {module}; print({module}.__file__)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


#: What `flow plugin add` / `buildkit add` say first when a package source is configured.
SOURCE_LINES = ("flow: indexUrl ", "flow: extraIndexUrls ", "flow: findLinks ")


def one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(SOURCE_LINES)]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("flow: error: "), stderr
    return lines[0]
