"""`flow init`: adopting an existing project, through the real CLI from a fresh FLOW_HOME, with
the Python kit installed from this repository (offline)."""

from __future__ import annotations

import tomllib
import zipfile
from pathlib import Path

import pytest

from create_support import PYTHON_KIT, listing
from packages_support import one_line_error

PYPROJECT = """\
# my project, made by hand
[project]
name = "legacy"   # the distribution
version = "1.0"
"""


@pytest.fixture
def work(run_flow, tmp_path: Path) -> Path:
    r = run_flow("buildkit", "add", str(PYTHON_KIT), "--no-index")
    assert r.returncode == 0, r.stderr
    work = tmp_path / "work"
    work.mkdir()
    return work


def test_init_adds_the_kit_to_pyproject_keeping_the_file(run_flow, work):
    (work / "pyproject.toml").write_text(PYPROJECT)
    r = run_flow("init", "-k", "flow-kit-python", cwd=work)
    assert r.returncode == 0, r.stderr
    assert f"Initialized flow project {work}: build kit flow-kit-python recorded in " \
           "pyproject.toml." in r.stdout
    text = (work / "pyproject.toml").read_text()
    assert text.startswith(PYPROJECT)  # comments and formatting kept, the table added
    assert tomllib.loads(text)["tool"]["flow"] == {"buildkit": "flow-kit-python"}
    # nothing else, apart from flow's own git-ignored .flow/ (where project edits lock)
    assert {p for p in listing(work) if not p.startswith(".flow")} == {"pyproject.toml"}
    assert (work / ".flow" / ".gitignore").read_text().endswith("*\n")
    help_text = run_flow("--help", cwd=work).stdout  # the kit now loads here
    assert "build" in help_text and "[flow-kit-python]" in help_text


def test_init_without_pyproject_writes_flow_toml(run_flow, work):
    (work / "setup.cfg").write_text("[metadata]\nname = legacy\n")
    r = run_flow("init", cwd=work)  # the only installed kit (it takes a setup.cfg folder)
    assert r.returncode == 0, r.stderr
    assert "recorded in flow.toml" in r.stdout
    assert tomllib.loads((work / "flow.toml").read_text()) == {
        "tool": {"flow": {"buildkit": "flow-kit-python"}}}
    assert listing(work) == {"setup.cfg", "flow.toml"}


def test_init_completes_a_flow_table_without_a_kit(run_flow, work):
    (work / "pyproject.toml").write_text(PYPROJECT + '\n[tool.flow]\nplugins = ["x"]\n')
    r = run_flow("init", "-k", "flow-kit-python", cwd=work)
    assert r.returncode == 0, r.stderr
    flow = tomllib.loads((work / "pyproject.toml").read_text())["tool"]["flow"]
    assert flow == {"plugins": ["x"], "buildkit": "flow-kit-python"}
    assert 'plugins = ["x"]\nbuildkit = "flow-kit-python"\n' in (work / "pyproject.toml").read_text()


@pytest.mark.parametrize("where", [".", "sub/dir"])
def test_init_inside_a_project_with_a_kit_is_refused(run_flow, work, where):
    (work / "flow.toml").write_text('[tool.flow]\nbuildkit = "flow-kit-python"\n')
    (work / "sub" / "dir").mkdir(parents=True)
    before = listing(work)
    r = run_flow("init", "-k", "flow-kit-python", cwd=work / where)
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert "already has a build kit: flow-kit-python" in line and "flow buildkit switch" in line
    assert listing(work) == before
    assert (work / "flow.toml").read_text() == '[tool.flow]\nbuildkit = "flow-kit-python"\n'


def test_init_with_an_unknown_kit_is_refused(run_flow, work):
    (work / "pyproject.toml").write_text(PYPROJECT)
    r = run_flow("init", "-k", "flow-kit-nope", cwd=work)
    assert r.returncode == 2
    assert "unknown build kit 'flow-kit-nope'" in one_line_error(r.stderr)
    assert (work / "pyproject.toml").read_text() == PYPROJECT
    assert listing(work) == {"pyproject.toml"}


def test_a_setup_py_project_is_adopted_and_builds(run_flow, work):
    (work / "setup.py").write_text(
        "from setuptools import setup\n"
        "setup(name='oldie', version='0.3', py_modules=['oldie'])\n")
    (work / "oldie.py").write_text("VALUE = 1\n")
    r = run_flow("init", "-k", "flow-kit-python", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "recorded in flow.toml" in r.stdout
    r = run_flow("build", cwd=work)
    assert r.returncode == 0, r.stderr
    wheels = sorted((work / "dist").glob("*.whl"))
    assert [w.name for w in wheels] == ["oldie-0.3-py3-none-any.whl"]
    assert "oldie.py" in zipfile.ZipFile(wheels[0]).namelist()
    assert sorted(p.name for p in (work / "dist").glob("*.tar.gz")) == ["oldie-0.3.tar.gz"]


# -- issue 22: a folder no kit takes is refused; the kit inferred from the folder ---------------

CLOUD_KIT = PYTHON_KIT.parent / "flow-kit-cloudbuild"
PACKAGE_JSON = '{"name": "site", "version": "1.0.0", "scripts": {"build": "node build.js"}}\n'


@pytest.fixture
def both_kits(run_flow, tmp_path: Path) -> Path:
    r = run_flow("buildkit", "add", str(CLOUD_KIT), str(PYTHON_KIT), "--no-index")
    assert r.returncode == 0, r.stderr
    work = tmp_path / "work"
    work.mkdir()
    return work


@pytest.mark.parametrize("args", [["-k", "flow-kit-python"], []])
def test_init_where_the_kit_finds_no_project_is_refused_and_writes_nothing(run_flow, work, args):
    (work / "notes.txt").write_text("scratch\n")
    r = run_flow("init", *args, cwd=work)
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert f"{work} is not a project build kit flow-kit-python takes" in line
    assert "pyproject.toml, setup.py or setup.cfg" in line and "flow init" in line
    assert listing(work) == {"notes.txt"}  # no flow.toml, no .flow/


def test_init_where_no_installed_kit_finds_a_project_names_what_each_looks_for(run_flow,
                                                                              both_kits):
    r = run_flow("init", cwd=both_kits)
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert "flow-kit-cloudbuild looks for package.json or pyproject.toml" in line
    assert "flow-kit-python looks for pyproject.toml, setup.py or setup.cfg" in line
    assert listing(both_kits) == set()


@pytest.mark.parametrize("files, kit", [
    ({"package.json": PACKAGE_JSON}, "flow-kit-cloudbuild"),
    ({"setup.py": "from setuptools import setup\nsetup(name='oldie')\n"}, "flow-kit-python"),
])
def test_init_without_a_terminal_infers_the_kit_from_the_folder(run_flow, both_kits, files, kit):
    for name, text in files.items():
        (both_kits / name).write_text(text)
    r = run_flow("init", cwd=both_kits)  # no terminal (stdin is not one)
    assert r.returncode == 0, r.stderr
    assert f"build kit {kit} recorded in flow.toml" in r.stdout
    assert tomllib.loads((both_kits / "flow.toml").read_text()) == {
        "tool": {"flow": {"buildkit": kit}}}


def test_init_without_a_terminal_names_the_kits_that_take_the_folder(run_flow, both_kits):
    (both_kits / "pyproject.toml").write_text(PYPROJECT)  # both kits take a pyproject.toml
    r = run_flow("init", cwd=both_kits)
    assert r.returncode == 2
    assert one_line_error(r.stderr) == (
        "flow: error: no build kit given and no terminal to choose from. Pass one with -k NAME "
        "(flow-kit-cloudbuild, flow-kit-python)")
    assert (both_kits / "pyproject.toml").read_text() == PYPROJECT


def test_init_with_nothing_installed_names_no_package_an_index_may_not_have(run_flow, tmp_path):
    r = run_flow("init", cwd=tmp_path)
    assert r.returncode == 2
    assert one_line_error(r.stderr) == (
        "flow: error: no build kit is installed. Install one first: flow buildkit add "
        "PATH-OR-NAME (a directory, a wheel, or a name from your configured index)")


def test_the_python_kit_outside_a_project_names_flow_init(run_flow, work):
    (work / "pyproject.toml").write_text(PYPROJECT)
    r = run_flow("build", cwd=work)
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert f"{work} is not inside a flow project" in line
    assert "flow init -k flow-kit-python" in line
