"""flowcore.cli.local_handover: a project's own flowcore takes over the command line, only when the
user trusts the project and the environment is a real one of theirs.

Real directory trees and real interpreters: a "local flowcore" is a real virtual environment
(``python -m venv``) holding a stand-in ``flowcore`` package of another version that prints how it
was started, so the exec that replaces the process is observed, not mocked. The hostile case is
what a cloned repository can commit: a ``.flow/env/bin/python`` that is a shell script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowcore._base.version import __version__
from flowcore.cli.local_handover import find_local_flowcore
from flowcore.config.environment import site_packages_dir
from offline import FLOW, offline_env

STRANGER_SCRIPT = """#!/bin/sh
echo "STRANGER CODE RAN: $0 $*"
touch "$(dirname "$0")/../../../ran"
"""

LOCAL_MAIN = """import os, sys
print("local flowcore 9.9.9:", " ".join(sys.argv[1:]))
print("FLOW_NO_LOCAL=" + os.environ.get("FLOW_NO_LOCAL", ""))
"""


def fake_project(root: Path, version: str | None, *, python: bool = True) -> Path:
    """What a hostile repository commits: a ``.flow/env`` with a script for ``bin/python``."""
    env = root / ".flow" / "env"
    site_packages_dir(env).mkdir(parents=True)
    if version is not None:
        (site_packages_dir(env) / f"flowcore-{version}.dist-info").mkdir()
    if python:
        (env / "bin").mkdir()
        (env / "bin" / "python").write_text(STRANGER_SCRIPT)
        (env / "bin" / "python").chmod(0o755)
    return root


def real_project(root: Path, version: str = "9.9.9") -> Path:
    """A project whose ``.flow/env`` is a real virtual environment with flowcore ``version``
    (``__version__``: the running version, installed apart)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "flow.toml").write_text('[tool.flow]\nbuildkit = "flow-kit-python"\n')
    env = root / ".flow" / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    sp = site_packages_dir(env)
    (sp / "flowcore").mkdir()
    (sp / "flowcore" / "__init__.py").write_text("")
    (sp / "flowcore" / "__main__.py").write_text(LOCAL_MAIN.replace("9.9.9", version))
    info = sp / f"flowcore-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: flowcore\nVersion: {version}\n")
    return root


def flow(flow_home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``flow`` entry (``python -m flowcore``), which hands over before parsing."""
    return subprocess.run([*FLOW, *args], cwd=cwd, env=offline_env(flow_home), capture_output=True,
                          text=True, timeout=120, check=False)


# -- finding a local flowcore (no decision yet) -------------------------------------------------


def test_a_different_flowcore_in_the_nearest_project_is_found_from_below(tmp_path: Path) -> None:
    root = fake_project(tmp_path / "proj", "9.9.9")
    deep = root / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_local_flowcore(deep) == (root / ".flow" / "env" / "bin" / "python", "9.9.9")


def test_the_same_version_installed_apart_is_another_flowcore(tmp_path: Path) -> None:
    root = fake_project(tmp_path / "same", __version__)
    env = root / ".flow" / "env"
    assert find_local_flowcore(root) == (env / "bin" / "python", __version__)
    # ... unless it is the running installation: this process runs that environment's
    # interpreter (an editable install there), or imports flowcore from its site-packages.
    elsewhere = str(tmp_path / "elsewhere")
    assert find_local_flowcore(root, running=(os.path.realpath(env), elsewhere)) is None
    site = os.path.realpath(site_packages_dir(env))
    assert find_local_flowcore(root, running=(elsewhere, site)) is None


def test_no_flowcore_or_no_python_means_no_hand_over(tmp_path: Path) -> None:
    assert find_local_flowcore(fake_project(tmp_path / "none", None)) is None
    assert find_local_flowcore(fake_project(tmp_path / "nopython", "9.9.9", python=False)) is None
    assert find_local_flowcore(tmp_path) is None  # no project at all


def test_the_nearest_project_decides_even_without_a_flowcore_of_its_own(tmp_path: Path) -> None:
    outer = fake_project(tmp_path / "outer", "9.9.9")
    inner = fake_project(outer / "inner", None)
    assert find_local_flowcore(inner) is None
    assert find_local_flowcore(outer / "elsewhere") is not None


# -- the attack: a committed .flow/env runs nothing ---------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["config"], ["doctor"],
                                  ["plugin", "list"]])
def test_a_committed_env_is_not_run_by_any_command(flow_home: Path, tmp_path: Path,
                                                   args: list[str]) -> None:
    root = fake_project(tmp_path / "cloned", "0.0.1")
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.flow]\nplugins = []\n')
    r = flow(flow_home, root, *args)
    assert "STRANGER CODE RAN" not in r.stdout + r.stderr
    assert not (root / "ran").exists()
    notes = [line for line in r.stderr.splitlines() if ".flow/env" in line]
    assert notes == ["flow: not using ./.flow/env: it holds flowcore 0.0.1 but this project is "
                     "not trusted. Review it, then run 'flow trust' there."]


def test_trusting_a_script_for_an_interpreter_still_runs_nothing(flow_home: Path,
                                                                 tmp_path: Path) -> None:
    root = fake_project(tmp_path / "cloned", "0.0.1")
    r = flow(flow_home, root, "trust")
    assert r.returncode == 0, r.stderr
    assert "its .flow/env still will not run" in r.stderr and "not a Python interpreter" in r.stderr
    r = flow(flow_home, root, "--help")
    assert r.returncode == 0 and not (root / "ran").exists()
    assert "STRANGER CODE RAN" not in r.stdout
    assert "flow: not using ./.flow/env: " in r.stderr and "is not a Python interpreter" in r.stderr


# -- a trusted, real environment is handed over, with one line every time ------------------------


def test_a_trusted_project_hands_over_and_says_so(flow_home: Path, tmp_path: Path) -> None:
    root = real_project(tmp_path / "proj")
    r = flow(flow_home, root, "build", "--watch", "--", "x y")
    assert "local flowcore" not in r.stdout  # not trusted yet
    assert "is not trusted" in r.stderr

    assert flow(flow_home, root, "trust").returncode == 0
    r = flow(flow_home, root / ".flow", "build", "--watch", "--", "x y")  # from below the root
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["local flowcore 9.9.9: build --watch -- x y", "FLOW_NO_LOCAL=1"]
    assert r.stderr == "flow: using flowcore 9.9.9 from ./env\n"
    r = flow(flow_home, root, "--help")
    assert r.stderr == "flow: using flowcore 9.9.9 from ./.flow/env\n"


def test_the_same_version_installed_apart_is_handed_over(flow_home: Path, tmp_path: Path) -> None:
    """import-local by installation, not only by version: a project's own flowcore of the very
    version running here is still the project's (its own dependencies, its own checkout)."""
    root = real_project(tmp_path / "proj", __version__)
    assert flow(flow_home, root, "trust").returncode == 0
    r = flow(flow_home, root, "build")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"local flowcore {__version__}: build", "FLOW_NO_LOCAL=1"]
    assert r.stderr == f"flow: using flowcore {__version__} from ./.flow/env\n"


def test_the_environments_own_flowcore_does_not_hand_over_to_itself(flow_home: Path,
                                                                    tmp_path: Path) -> None:
    """Run by the project environment's own interpreter (flowcore installed there editable: a
    .pth and a dist-info), flow is that installation: it answers, with no line and no loop."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "flow.toml").write_text('[tool.flow]\nbuildkit = "flow-kit-python"\n')
    env = root / ".flow" / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    sp = site_packages_dir(env)
    import flowcore

    paths = [os.path.dirname(os.path.dirname(flowcore.__file__)), *sys.path[1:]]
    (sp / "_editable_flowcore.pth").write_text("\n".join(p for p in paths if p) + "\n")
    info = sp / f"flowcore-{__version__}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: flowcore\nVersion: {__version__}\n")
    assert flow(flow_home, root, "trust").returncode == 0
    r = subprocess.run([str(env / "bin" / "python"), "-m", "flowcore", "--version"], cwd=root,
                       env=offline_env(flow_home), capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"flow {__version__}\n", "")


def test_a_change_after_trust_asks_again(flow_home: Path, tmp_path: Path) -> None:
    root = real_project(tmp_path / "proj")
    assert flow(flow_home, root, "trust").returncode == 0
    assert flow(flow_home, root, "--help").stdout.startswith("local flowcore")
    # What a `git pull` does: the project config changes.
    (root / "flow.toml").write_text('[tool.flow]\nbuildkit = "flow-kit-python"\nplugins = ["x"]\n')
    r = flow(flow_home, root, "--help")
    assert not r.stdout.startswith("local flowcore")
    assert "the project changed since you trusted it (flow.toml)" in r.stderr
    # ... or the interpreter is swapped for another program.
    assert flow(flow_home, root, "trust").returncode == 0
    python = root / ".flow" / "env" / "bin" / "python"
    python.unlink()
    python.write_text(STRANGER_SCRIPT)
    python.chmod(0o755)
    r = flow(flow_home, root, "--help")
    assert "STRANGER CODE RAN" not in r.stdout and not (root / "ran").exists()
    assert "changed since you trusted it (.flow/env/bin/python)" in r.stderr


def test_revoke_and_list(flow_home: Path, tmp_path: Path) -> None:
    root = real_project(tmp_path / "proj")
    assert flow(flow_home, root, "trust").returncode == 0
    listed = flow(flow_home, tmp_path, "trust", "--list").stdout
    assert listed == f"{os.path.realpath(root)}  [trusted]\n"
    r = flow(flow_home, root, "trust", "--revoke")
    assert r.stdout == f"No longer trusted: {os.path.realpath(root)}\n"
    assert not flow(flow_home, root, "--help").stdout.startswith("local flowcore")
    assert flow(flow_home, tmp_path, "trust", "--list").stdout == "No trusted projects.\n"


def test_an_env_writable_by_others_is_not_handed_over_even_when_trusted(
        flow_home: Path, tmp_path: Path) -> None:
    root = real_project(tmp_path / "proj")
    assert flow(flow_home, root, "trust").returncode == 0
    (root / ".flow" / "env").chmod(0o777)
    r = flow(flow_home, root, "--help")
    assert not r.stdout.startswith("local flowcore")
    assert "is writable by other users" in r.stderr


def test_root_option_picks_the_project_and_is_passed_on(flow_home: Path, tmp_path: Path) -> None:
    root = real_project(tmp_path / "proj")
    assert flow(flow_home, root, "trust").returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = flow(flow_home, elsewhere, "--root", str(root), "build")
    assert r.stdout.splitlines()[0] == f"local flowcore 9.9.9: --root {root} build"
    r = flow(flow_home, elsewhere, f"--root={root}", "build")
    assert r.stdout.splitlines()[0] == f"local flowcore 9.9.9: --root={root} build"
    r = flow(flow_home, elsewhere, "--version")  # no project here: this flowcore answers
    assert r.stdout == f"flow {__version__}\n"


def test_flow_no_local_stops_the_hand_over(flow_home: Path, tmp_path: Path) -> None:
    root = real_project(tmp_path / "proj")
    assert flow(flow_home, root, "trust").returncode == 0
    r = subprocess.run([*FLOW, "--version"], cwd=root, capture_output=True, text=True, timeout=60,
                       env=offline_env(flow_home, FLOW_NO_LOCAL="1"), check=False)
    assert r.stdout == f"flow {__version__}\n" and r.stderr == ""
