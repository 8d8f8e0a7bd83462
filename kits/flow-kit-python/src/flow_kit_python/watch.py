"""``flow build --watch`` and ``flow test --watch``: the kit's side of flowcore._base.watching.

A build reruns only for a file that goes into the distribution. What goes in is what the last
wheel held (the build backend already decided, from pyproject.toml and hatch's or setuptools'
rules): a change to a file whose path ends with a wheel member's path (``src/pkg/a.py`` is
``pkg/a.py`` in the wheel), a file added or removed next to one, or the project's metadata
files (pyproject.toml, README, LICENSE). Tests and docs do not go into a wheel, so editing them
rebuilds nothing. Before the first wheel exists, every file that is not ignored counts.
"""

from __future__ import annotations

import os
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import click

from flowcore.api import Change, watch

METADATA_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in")
METADATA_PREFIXES = ("README", "LICENSE", "LICENCE", "COPYING")


def wheel_members(paths: list[Path]) -> set[str] | None:
    """The files of the wheel among ``paths`` (outside .dist-info); None if there is none."""
    wheel = next((p for p in paths if p.name.endswith(".whl")), None)
    if wheel is None:
        return None
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    return {n for n in names if not n.endswith("/") and ".dist-info/" not in n.split("/", 1)[0] + "/"}


def _is_member(path: str, members: set[str]) -> bool:
    return any(path == m or path.endswith("/" + m) for m in members)


def goes_into_distribution(members: set[str] | None) -> Callable[[Change], bool]:
    def relevant(change: Change) -> bool:
        if members is None or change.path in METADATA_FILES or change.path.startswith(METADATA_PREFIXES):
            return True
        if _is_member(change.path, members):
            return True
        if change.kind in ("added", "deleted"):  # a new module next to the package's others
            parent = PurePosixPath(change.path).parent.as_posix()
            dirs = {PurePosixPath(m).parent.as_posix() for m in members}
            return parent != "." and any(parent == d or parent.endswith("/" + d) for d in dirs if d != ".")
        return False
    return relevant


def _outputs(root: Path, conf: dict[str, Any]) -> list[str]:
    dist = str(conf.get("dist-dir", "dist")).strip("/")
    return [f"/{dist}/", "/build/", "*.egg-info/"]


def watch_build(ctx: click.Context, root: Path, conf: dict[str, Any],
                build_once: Callable[[], list[Path]]) -> None:
    members: list[set[str] | None] = [None]

    def run(changes: list[Change]) -> None:
        members[0] = wheel_members(build_once()) or members[0]

    _watching(ctx, root, run, ignore=_outputs(root, conf),
              relevant=lambda c: goes_into_distribution(members[0])(c))


def watch_tests(ctx: click.Context, root: Path, conf: dict[str, Any], argv: list[str],
                clear: bool, env: dict[str, str] | None = None,
                on_result: Callable[[int, float], None] | None = None) -> None:
    """Rerun pytest after each change: failed tests first (pytest's --ff), a one-line summary;
    ``on_result(exit_code, seconds)`` after each run (the kit's flow_python_test_result)."""
    runs = [0]

    def run(changes: list[Change]) -> None:
        runs[0] += 1
        if clear and runs[0] > 1 and os.isatty(1):
            click.clear()
        start = time.monotonic()
        done = subprocess.run([*argv, "--ff"], cwd=root, check=False, capture_output=True, text=True,
                              env=env)
        if on_result is not None:
            on_result(done.returncode, time.monotonic() - start)
        output = done.stdout + done.stderr
        click.echo(output, nl=False)
        summary = _summary(output) or f"pytest exited with {done.returncode}"
        click.echo(f"run {runs[0]}: {'passed' if done.returncode == 0 else 'FAILED'}: {summary}", err=True)
        if done.returncode not in (0, 5):
            raise SystemExit(done.returncode)

    _watching(ctx, root, run, ignore=_outputs(root, conf))


def _summary(output: str) -> str:
    """pytest's closing line without its '=' frame, e.g. '1 failed, 3 passed in 0.05s'."""
    for line in reversed(output.splitlines()):
        text = line.strip().strip("=").strip()
        if text and (" passed" in text or " failed" in text or " error" in text or "no tests ran" in text):
            return text
    return ""


def _watching(ctx: click.Context, root: Path, run: Callable[[list[Change]], None], **kw: Any) -> None:
    try:
        watch(root, run, **kw)
    except KeyboardInterrupt:
        click.echo("stopped watching", err=True)
        ctx.exit(130)
