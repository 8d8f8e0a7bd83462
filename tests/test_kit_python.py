"""flow-kit-python end to end, offline, from a fresh FLOW_HOME:
`flow buildkit add kits/flow-kit-python`, `flow create`, then `flow build` and `flow test`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from create_support import PYTHON_KIT, TEMPLATES_PLUGIN
from packages_support import one_line_error


@pytest.fixture
def work(run_flow, tmp_path: Path) -> Path:
    r = run_flow("buildkit", "add", str(PYTHON_KIT), "--no-index")
    assert r.returncode == 0, r.stderr
    work = tmp_path / "work"
    work.mkdir()
    return work


def _create(run_flow, work: Path, name: str, template: str) -> Path:
    r = run_flow("create", name, "-k", "flow-kit-python", "-t", template, "--defaults", cwd=work)
    assert r.returncode == 0, r.stderr
    return work / name


def test_library_builds_and_passes_its_tests(run_flow, work):
    demo = _create(run_flow, work, "demo", "library")
    r = run_flow("build", cwd=demo)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["built dist/demo-0.1.0-py3-none-any.whl",
                                     "built dist/demo-0.1.0.tar.gz"]
    assert "no isolation" in r.stderr  # offline (UV_OFFLINE=1): the kit's backend is used
    names = zipfile.ZipFile(demo / "dist" / "demo-0.1.0-py3-none-any.whl").namelist()
    assert "demo/__init__.py" in names
    r = run_flow("test", cwd=demo)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout
    assert "preparing the test environment .flow/test-env" in r.stderr
    r = run_flow("test", "-q", "-k", "greet", cwd=demo)  # arguments go to pytest; env reused
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 1 deselected" in r.stdout and "preparing" not in r.stderr


def test_cli_application_builds_and_passes_its_tests(run_flow, work):
    app = _create(run_flow, work, "hello-app", "cli")
    r = run_flow("build", cwd=app)
    assert r.returncode == 0, r.stderr
    wheel = app / "dist" / "hello_app-0.1.0-py3-none-any.whl"
    entry_points = zipfile.ZipFile(wheel).read("hello_app-0.1.0.dist-info/entry_points.txt")
    assert b"hello-app = hello_app.cli:main" in entry_points
    r = run_flow("test", cwd=app)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout


def test_plugin_template_builds_and_passes_its_tests(run_flow, work):
    r = run_flow("plugin", "add", str(TEMPLATES_PLUGIN), "--no-index")
    assert r.returncode == 0, r.stderr
    crunch = _create(run_flow, work, "crunch", "data-script")
    assert run_flow("build", cwd=crunch).returncode == 0
    r = run_flow("test", cwd=crunch)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout


def test_failing_tests_give_pytests_exit_code(run_flow, work):
    demo = _create(run_flow, work, "demo", "library")
    (demo / "tests" / "test_fails.py").write_text("def test_no():\n    assert False\n")
    r = run_flow("test", cwd=demo)
    assert r.returncode == 1
    assert "1 failed, 2 passed" in r.stdout
    assert "flow: error" not in r.stderr


def test_isolated_build_offline_fails_with_the_way_out(run_flow, work):
    demo = _create(run_flow, work, "demo", "library")
    with (demo / "pyproject.toml").open("a") as fh:
        fh.write("build-isolation = true\n")  # under [tool.flow.python], the last table
    r = run_flow("build", cwd=demo)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("flow: error: build failed (uv exited with ")
    assert "flow build --no-isolation" in last
    r = run_flow("build", "--no-isolation", cwd=demo)
    assert r.returncode == 0, r.stderr


def test_bad_setting_is_one_line(run_flow, work):
    demo = _create(run_flow, work, "demo", "library")
    with (demo / "pyproject.toml").open("a") as fh:
        fh.write('build-isolation = "sometimes"\n')
    r = run_flow("build", cwd=demo)
    assert r.returncode == 2
    assert one_line_error(r.stderr).startswith(
        "flow: error: [tool.flow.python] build-isolation = 'sometimes' is not one of auto, true")


def test_projects_own_venv_is_used_for_tests(run_flow, work):
    demo = _create(run_flow, work, "demo", "library")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(demo / ".venv")],
                   check=True)
    r = run_flow("test", cwd=demo)
    assert r.returncode == 1
    assert one_line_error(r.stderr) == (
        f"flow: error: pytest is not installed for {demo / '.venv' / 'bin' / 'python'}. Add "
        "pytest to the project's test dependencies and install them")


def test_build_outside_a_project(run_flow, work):
    r = run_flow("-k", "flow-kit-python", "build", cwd=work)
    assert r.returncode == 2
    assert "is not inside a flow project" in one_line_error(r.stderr)


def test_kits_own_suite(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=PYTHON_KIT, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "FLOW_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout
