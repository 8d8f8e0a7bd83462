"""The flow-managed test environment of a project without its own ``.venv``.

``<project>/.flow/test-env`` is a virtual environment that sees the packages flow itself sees
(flowcore's environment and flow's managed environment, through ``_flow_visible.pth``), with the
project installed into it in editable mode along with whatever it needs that those do not
provide. Offline, the install uses no index and no build isolation: the build backend comes from
flow's environment (this kit depends on hatchling for that reason), and test tools such as
pytest must already be there. It is rebuilt when ``pyproject.toml``, ``setup.py`` or
``setup.cfg`` (or the offline mode, or flow's interpreter) changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import click

from flowcore.api import FlowError, site_packages_dir, uv_binary

ENV_DIR = Path(".flow") / "test-env"
STAMP = "flow-test-env.json"
PTH = "_flow_visible.pth"


def visible_site_dirs() -> list[str]:
    """site-packages directories on flow's own import path, in order."""
    out: list[str] = []
    for entry in sys.path:
        path = Path(entry or ".")
        if path.name in ("site-packages", "dist-packages") and path.is_dir() and entry not in out:
            out.append(entry)
    return out


def _visible_names(dirs: list[str]) -> list[str]:
    from importlib.metadata import distributions

    names = {d.metadata["Name"] for d in distributions(path=dirs) if d.metadata["Name"]}
    return sorted(names)


def _spec(root: Path) -> str:
    if not (root / "pyproject.toml").is_file():  # setup.py/setup.cfg: extras are not read here
        return str(root)
    try:
        extras = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get(
            "project", {}).get("optional-dependencies", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FlowError(f"cannot read {root / 'pyproject.toml'}: {exc}", "Fix the file") from exc
    return f"{root}[test]" if "test" in extras else str(root)


def _check(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        detail = " ".join(lines[-4:])[:400] or f"exit code {proc.returncode}"
        raise FlowError(f"{what}: {detail}",
                        "Check the project's dependencies (offline, they must be in flow's "
                        "environment), or give the project its own .venv")


def _metadata_digest(root: Path) -> str:
    """A digest of the files that declare the project's dependencies."""
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "setup.py", "setup.cfg"):
        path = root / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-"))
    return digest.hexdigest()


def ensure_test_env(root: Path, offline: bool) -> str:
    """Create or refresh ``<root>/.flow/test-env``; returns its interpreter."""
    env = root / ENV_DIR
    python = env / "bin" / "python"
    dirs = visible_site_dirs()
    stamp = {
        "pyproject": _metadata_digest(root),
        "offline": offline,
        "python": sys.executable,
        "visible": dirs,
    }
    try:
        if python.exists() and json.loads((env / STAMP).read_text()) == stamp:
            return str(python)
    except (OSError, ValueError):
        pass
    click.echo(f"preparing the test environment {ENV_DIR}", err=True)
    shutil.rmtree(env, ignore_errors=True)
    try:
        uv = uv_binary()
        if uv:
            _check([uv, "venv", "--quiet", "--python", sys.executable, str(env)],
                   "cannot create the test environment")
        else:
            _check([sys.executable, "-m", "venv", str(env)], "cannot create the test environment")
        lines = [f"import site; site.addsitedir({d!r})" for d in dirs]
        (site_packages_dir(env) / PTH).write_text("\n".join(lines) + "\n", encoding="utf-8")
        spec = _spec(root)
        options = ["--no-index", "--no-build-isolation"] if offline else []
        if uv:
            with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
                fh.write("\n".join(_visible_names(dirs)) + "\n")
            try:
                _check([uv, "pip", "install", "--quiet", "--python", str(python),
                        "--excludes", fh.name, *options, "-e", spec, "pytest"],
                       f"cannot install {root.name} into the test environment")
            finally:
                os.unlink(fh.name)
        else:
            _check([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *options, "-e", spec, "pytest"],
                   f"cannot install {root.name} into the test environment")
        (env / STAMP).write_text(json.dumps(stamp), encoding="utf-8")
    except BaseException:
        shutil.rmtree(env, ignore_errors=True)
        raise
    return str(python)
