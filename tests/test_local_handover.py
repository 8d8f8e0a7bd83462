"""flowcore.local_handover: a project's own flowcore takes over the command line.

Real directory trees; the hand-over itself runs in a subprocess whose "local flowcore" is a shell
script that prints how it was started (the exec replaces the process, so there is nothing to mock).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flowcore import __version__
from flowcore.environment import site_packages_dir
from flowcore.local_handover import find_local_flowcore

FAKE_PYTHON = """#!/bin/sh
echo "local flowcore: $*"
echo "FLOW_NO_LOCAL=$FLOW_NO_LOCAL"
"""


def project(root: Path, version: str | None, *, python: bool = True) -> Path:
    """A project root with a ``.flow/env``, holding flowcore ``version`` (or none)."""
    env = root / ".flow" / "env"
    site_packages_dir(env).mkdir(parents=True)
    if version is not None:
        (site_packages_dir(env) / f"flowcore-{version}.dist-info").mkdir()
    if python:
        (env / "bin").mkdir()
        (env / "bin" / "python").write_text(FAKE_PYTHON)
        (env / "bin" / "python").chmod(0o755)
    return root


def test_a_different_flowcore_in_the_nearest_project_is_found_from_below(tmp_path: Path) -> None:
    root = project(tmp_path / "proj", "9.9.9")
    deep = root / "src" / "pkg"
    deep.mkdir(parents=True)
    found = find_local_flowcore(deep)
    assert found == (root / ".flow" / "env" / "bin" / "python", "9.9.9")


def test_the_same_flowcore_no_flowcore_or_no_python_means_no_hand_over(tmp_path: Path) -> None:
    assert find_local_flowcore(project(tmp_path / "same", __version__)) is None
    assert find_local_flowcore(project(tmp_path / "none", None)) is None
    assert find_local_flowcore(project(tmp_path / "nopython", "9.9.9", python=False)) is None
    assert find_local_flowcore(tmp_path) is None  # no project at all


def test_the_nearest_project_decides_even_without_a_flowcore_of_its_own(tmp_path: Path) -> None:
    outer = project(tmp_path / "outer", "9.9.9")
    inner = project(outer / "inner", None)
    assert find_local_flowcore(inner) is None
    assert find_local_flowcore(outer / "elsewhere") is not None  # a folder without .flow/env: walks on


def test_a_relative_start_is_taken_from_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    root = project(tmp_path / "proj", "9.9.9")
    (root / "sub").mkdir()
    monkeypatch.chdir(root)
    assert find_local_flowcore(Path("sub")) == (root / ".flow" / "env" / "bin" / "python", "9.9.9")


def hand_over(args: list[str], cwd: Path, debug: bool = False) -> subprocess.CompletedProcess[str]:
    code = ("import sys\nfrom flowcore.local_handover import hand_over_to_local\n"
            f"hand_over_to_local({args!r}, debug={debug!r})\nprint('stayed')\n")
    env = {k: v for k, v in os.environ.items() if k != "FLOW_NO_LOCAL"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_command_line_is_handed_over_whole_and_loops_are_stopped(tmp_path: Path) -> None:
    root = project(tmp_path / "proj", "9.9.9")
    r = hand_over(["build", "--watch", "--", "x y"], root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["local flowcore: -m flowcore build --watch -- x y", "FLOW_NO_LOCAL=1"]
    assert r.stderr == ""


def test_root_option_picks_the_project_and_is_passed_on(tmp_path: Path) -> None:
    root = project(tmp_path / "proj", "9.9.9")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = hand_over(["--root", str(root), "build"], elsewhere)
    assert r.stdout.splitlines()[0] == f"local flowcore: -m flowcore --root {root} build"
    r = hand_over([f"--root={root}", "build"], elsewhere)
    assert r.stdout.splitlines()[0] == f"local flowcore: -m flowcore --root={root} build"
    # after "--" it is an argument of the command, not flow's option
    r = hand_over(["run", "--", "--root", str(root)], elsewhere)
    assert r.stdout == "stayed\n"


def test_without_a_local_flowcore_the_process_carries_on(tmp_path: Path) -> None:
    r = hand_over(["build"], project(tmp_path / "same", __version__))
    assert (r.returncode, r.stdout) == (0, "stayed\n")


def test_debug_says_what_is_handed_over_and_how_to_stop_it(tmp_path: Path) -> None:
    root = project(tmp_path / "proj", "9.9.9")
    r = hand_over(["build"], root, debug=True)
    assert r.stdout.startswith("local flowcore: -m flowcore build")
    assert r.stderr == (f"flow: debug: handing over to flowcore 9.9.9 of the project "
                        f"({root / '.flow' / 'env' / 'bin' / 'python'}); this is flowcore "
                        f"{__version__}. Set FLOW_NO_LOCAL=1 to stop this.\n")
