"""flow-plugin-buildinfo as its users meet it: flow-kit-python installed from its folder into a
fresh FLOW_HOME, the plugin added to a project (a real git checkout) from its folder, then a real
``flow build`` (flowcore.testing's fixtures ``flow`` and ``make_project``; nothing of flowcore
beyond flowcore.api and flowcore.testing)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from flowcore.testing import FlowRunner

MakeProject = Callable[..., Path]
HERE = Path(__file__).resolve().parent.parent           # plugins/flow-plugin-buildinfo
PYTHON_KIT = HERE.parent.parent / "kits" / "flow-kit-python"
PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.20"]
build-backend = "hatchling.build"

[project]
name = "stamped"
version = "1.0"
requires-python = ">=3.11"

[tool.flow]
buildkit = "flow-kit-python"
{extra}"""
FILES = {"src/stamped/__init__.py": '"""A package to stamp."""\n', ".gitignore": "dist/\n.flow/\n"}


def git(project: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
                          cwd=project, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def installed(flow: FlowRunner) -> FlowRunner:
    flow.install_kit(PYTHON_KIT)
    return flow


def checkout(flow: FlowRunner, make_project: MakeProject, extra: str = "") -> Path:
    """A committed git checkout of a flow-kit-python project with the plugin added to it (inside
    a project flow loads the project's own plugins, not the global kit-bound ones)."""
    files = {**FILES, "pyproject.toml": PYPROJECT.format(extra=extra)}
    project = make_project("stamped", files=files, trust=True)
    flow.install_plugin(HERE, cwd=project)  # adds it to [tool.flow] plugins: committed below
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "first")
    return project


def wheel_stamp(project: Path) -> tuple[dict[str, object], zipfile.ZipFile]:
    """The constants of the wheel's _build_info.py, imported from the wheel itself."""
    wheel = project / "dist" / "stamped-1.0-py3-none-any.whl"
    code = "import json, stamped._build_info as b; print(json.dumps([b.COMMIT, b.DIRTY, b.BUILD_TIME]))"
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(wheel)},
                         capture_output=True, text=True, check=True).stdout
    import json

    commit, dirty, when = json.loads(out)
    return {"COMMIT": commit, "DIRTY": dirty, "BUILD_TIME": when}, zipfile.ZipFile(wheel)


def test_build_stamps_the_commit_into_wheel_and_sdist(installed: FlowRunner, make_project: MakeProject) -> None:
    project = checkout(installed, make_project)
    head = git(project, "rev-parse", "HEAD")
    result = installed.run("build", cwd=project)
    assert result.exit_code == 0, result.stderr
    assert f"buildinfo: stamped/_build_info.py: commit {head[:12]}\n" in result.stderr
    stamp, wheel = wheel_stamp(project)
    assert stamp["COMMIT"] == head and stamp["DIRTY"] is False
    assert isinstance(stamp["BUILD_TIME"], str) and stamp["BUILD_TIME"].endswith("Z")
    # the wheel is still valid: the new file has its RECORD line, and sits before the metadata
    data = wheel.read("stamped/_build_info.py")
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record = wheel.read("stamped-1.0.dist-info/RECORD").decode()
    assert f"stamped/_build_info.py,sha256={digest},{len(data)}" in record.splitlines()
    names = wheel.namelist()
    assert names.index("stamped/_build_info.py") < min(
        i for i, n in enumerate(names) if ".dist-info/" in n)
    with tarfile.open(project / "dist" / "stamped-1.0.tar.gz") as sdist:
        member = sdist.extractfile("stamped-1.0/src/stamped/_build_info.py")
        assert member is not None and member.read() == data
    # the user's tree is as it was: nothing written into it, nothing left behind
    assert git(project, "status", "--porcelain") == ""


def test_dirty_checkout_and_reproducible_time(installed: FlowRunner, make_project: MakeProject) -> None:
    project = checkout(installed, make_project)
    (project / "src" / "stamped" / "__init__.py").write_text('"""Changed, not committed."""\n')
    result = installed.run("build", cwd=project, env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert result.exit_code == 0, result.stderr
    assert "(dirty)" in result.stderr
    stamp, _ = wheel_stamp(project)
    assert stamp["DIRTY"] is True and stamp["BUILD_TIME"] == "2023-11-14T22:13:20Z"


def test_settings_turn_it_off_or_name_the_mistake(installed: FlowRunner, make_project: MakeProject) -> None:
    project = checkout(installed, make_project, "\n[tool.flow.buildinfo]\nenabled = false\n")
    result = installed.run("build", cwd=project)
    assert result.exit_code == 0, result.stderr
    assert "buildinfo" not in result.stderr
    assert "stamped/_build_info.py" not in zipfile.ZipFile(
        project / "dist" / "stamped-1.0-py3-none-any.whl").namelist()
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("enabled = false", 'package = "nope"'))
    installed.trust(project)  # a changed pyproject.toml is trusted again before its plugins load
    # a mistake stops the build before the backend runs: one line naming the key and the fix
    result = installed.run("build", cwd=project)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"flow: error: [tool.flow.buildinfo] package = 'nope': {project} has no such package (under "
        "src/ or at its root). Set [tool.flow.buildinfo] package = \"NAME\" in the project's pyproject.toml"]
    assert result.output == ""


OTHER_KIT = {
    "pyproject.toml": """\
[build-system]
requires = ["hatchling>=1.20"]
build-backend = "hatchling.build"

[project]
name = "flow-kit-other"
version = "0.1.0"
dependencies = ["flowcore>=0.1", "click>=8.1"]

[project.entry-points."flow.kits"]
flow-kit-other = "flow_kit_other"
""",
    "flow_kit_other/__init__.py": '''\
"""A second kit: its command prints the plugins this run loads."""

import click

from flowcore.api import current, hookimpl


@click.command(name="loaded")
def loaded() -> None:
    for name, kind in current().plugins_to_load:
        click.echo(f"{name} ({kind})")
    click.echo("end")


@hookimpl
def flow_register_commands(registry):
    registry.add(loaded)
''',
}


def test_with_another_kit_active_it_is_not_loaded_and_says_nothing(
        installed: FlowRunner, tmp_path: Path) -> None:
    kit = tmp_path / "flow-kit-other"
    for rel, text in OTHER_KIT.items():
        (kit / rel).parent.mkdir(parents=True, exist_ok=True)
        (kit / rel).write_text(text)
    installed.install_kit(kit)
    added = installed.install_plugin(HERE)  # globally: bound to the kit it names
    assert "for build kit flow-kit-python" in added.output
    assert added.stderr == ""  # its hooks match the kit's specs: the probe warns of nothing
    result = installed.run("-k", "flow-kit-other", "loaded")
    assert result.exit_code == 0, result.stderr
    assert result.output == "end\n" and result.stderr == ""
    # the same install, with its own kit active, is one of the run's plugins
    listed = installed.run("-k", "flow-kit-python", "plugin", "list")
    assert "flow-plugin-buildinfo" in listed.output, listed.stderr
