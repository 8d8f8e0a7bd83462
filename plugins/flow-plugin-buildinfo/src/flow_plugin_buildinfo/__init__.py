"""flow-plugin-buildinfo: ``flow build`` stamps the git commit into the package it builds.

Kit-bound to ``flow-kit-python`` (``FLOW_BUILD_KITS``): it implements that kit's hook
``flow_python_before_build`` and returns one extra file, ``<package>/_build_info.py``, which the
kit adds to the wheel (with its ``RECORD`` line) and to the sdist. The plugin never writes into
the project: an interrupted build leaves nothing behind, ``flow build --watch`` is not woken by
its own stamp, and ``git status`` stays as it was, so the dirty flag is what the user changed.

Settings, ``[tool.flow.buildinfo]`` in the project over ``pluginConfig.buildinfo`` in
``$FLOW_HOME/config.json``: ``enabled`` (default true), ``package`` (the import package to stamp;
default: the one named after the project, else the only one), ``file`` (default
``_build_info.py``), ``time`` (default true; ``SOURCE_DATE_EPOCH`` is used when set, so a
reproducible build stays reproducible).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from flowcore.api import hookimpl

if TYPE_CHECKING:
    from flow_kit_python.hookspecs import ExtraFile
    from flowcore.api import CoreContext

FLOW_BUILD_KITS = ["flow-kit-python"]
FLOW_API = ">=1"

DEFAULTS: dict[str, object] = {"enabled": True, "package": "", "file": "_build_info.py", "time": True}
FIX_CONFIG = "Fix [tool.flow.buildinfo] in the project's pyproject.toml"


def settings(section: dict[str, object]) -> dict[str, object]:
    """The section over the defaults, each value of the right type (else a one-line error)."""
    from flowcore.api import UsageError

    out = dict(DEFAULTS)
    for key, value in section.items():
        if key not in DEFAULTS:
            raise UsageError(f"[tool.flow.buildinfo] has no key {key!r} (keys: {', '.join(DEFAULTS)})",
                             FIX_CONFIG)
        if type(value) is not type(DEFAULTS[key]):
            kind = "true or false" if isinstance(DEFAULTS[key], bool) else "a string"
            raise UsageError(f"[tool.flow.buildinfo] {key} must be {kind}, not {value!r}", FIX_CONFIG)
        out[key] = value
    name = str(out["file"])
    if not re.fullmatch(r"[A-Za-z_]\w*\.py", name):
        raise UsageError(f"[tool.flow.buildinfo] file = {name!r} is not a module file name",
                         f"{FIX_CONFIG}: a name like _build_info.py")
    return out


def find_package(project: Path, configured: str) -> Path:
    """The folder of the import package to stamp, relative to the project root.

    ``configured`` (dotted names allowed) is looked for under ``src/`` and the root; without it,
    the package named after the project (``[project] name``, normalised), else the only package
    under ``src/`` (or, without ``src/``, at the root).
    """
    from flowcore.api import FlowError

    fix = 'Set [tool.flow.buildinfo] package = "NAME" in the project\'s pyproject.toml'
    names = [configured] if configured else [_project_module(project)]
    for name in filter(None, names):
        for base in (Path("src"), Path(".")):
            folder = base / Path(*name.split("."))
            if (project / folder / "__init__.py").is_file():
                return folder
    if configured:
        raise FlowError(f"[tool.flow.buildinfo] package = {configured!r}: {project} has no such "
                        "package (under src/ or at its root)", fix)
    for base in (project / "src", project):
        found = sorted(p.parent for p in base.glob("*/__init__.py") if p.parent.name != "tests")
        if len(found) == 1:
            return found[0].relative_to(project)
        if found:
            raise FlowError(f"{project} has several packages ({', '.join(p.name for p in found)}), "
                            "so flow-plugin-buildinfo cannot tell which one to stamp", fix)
    raise FlowError(f"flow-plugin-buildinfo found no package in {project} to stamp", fix)


def _project_module(project: Path) -> str:
    import tomllib

    try:
        data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return ""
    name = data.get("project", {}).get("name", "")
    return re.sub(r"[-_.]+", "_", name).lower() if isinstance(name, str) else ""


def git_state(project: Path) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the checkout holding ``project``; ``(None, None)`` outside one.

    Dirty means a tracked file differs from the commit (staged or not); untracked files do not
    count, since the build backend decides which of them go in, not git.
    """

    def git(*args: str) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True,
                                  check=False)
        except OSError:  # no git on PATH: the same as no repository
            return None

    head = git("rev-parse", "--verify", "HEAD")
    if head is None or head.returncode != 0:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return head.stdout.strip(), bool(status and status.stdout.strip())


def build_time() -> str:
    """UTC, ISO 8601 to the second: ``SOURCE_DATE_EPOCH`` when set (reproducible builds), else now."""
    import os
    from datetime import UTC, datetime

    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    moment = datetime.fromtimestamp(int(epoch), UTC) if epoch.isdigit() else datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def render(commit: str | None, dirty: bool | None, when: str | None) -> str:
    """The module's text: three constants a program reads (``from pkg._build_info import COMMIT``)."""
    return (f'"""Build information, written by flow-plugin-buildinfo when this package was built."""\n\n'
            f"COMMIT = {commit!r}\nDIRTY = {dirty!r}\nBUILD_TIME = {when!r}\n")


@hookimpl
def flow_python_before_build(context: CoreContext, project: Path) -> list[ExtraFile] | None:
    """The stamp as an extra file of the wheel (and the sdist), unless ``enabled = false``."""
    import click

    from flowcore.api import FlowError, warn

    conf = settings(context.config.section)
    if not conf["enabled"]:
        return None
    folder = find_package(project, str(conf["package"]))
    source = (folder / str(conf["file"])).as_posix()
    if (project / source).exists():
        raise FlowError(f"{source} exists in the project, and flow-plugin-buildinfo writes that "
                        "file into the built package",
                        'Remove it, or set [tool.flow.buildinfo] file = "OTHER.py"')
    commit, dirty = git_state(project)
    if commit is None:
        warn(f"{project} is not in a git checkout with a commit, so the build info says COMMIT = None",
             "Commit the project (git init, git commit), or set [tool.flow.buildinfo] enabled = false")
    package_dir = folder.relative_to("src") if folder.parts[:1] == ("src",) else folder
    path = f"{package_dir.as_posix()}/{conf['file']}"
    click.echo(f"buildinfo: {path}: commit {commit[:12] if commit else None}"
               f"{' (dirty)' if dirty else ''}", err=True)
    return [{"path": path, "source": source,
             "content": render(commit, dirty, build_time() if conf["time"] else None)}]
