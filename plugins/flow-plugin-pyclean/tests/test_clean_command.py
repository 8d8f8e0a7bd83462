"""``flow clean`` on a real directory tree, in-process through ``flow.invoke`` (click's CliRunner
with a real core instance of a temporary FLOW_HOME: flowcore.testing's fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flow_plugin_pyclean import FLOW_BUILD_KITS, clean
from flowcore.api import UsageError
from flowcore.testing import FlowRunner, Result


def _tree(root: Path) -> None:
    for d in ("dist", "build", "src/app.egg-info", "app.egg-info", "src/app/__pycache__",
              "tests/__pycache__", ".pytest_cache", ".venv/lib/__pycache__",
              ".git/__pycache__", "docs/build-notes", "keep/dist"):
        (root / d).mkdir(parents=True)
        (root / d / "f").write_text("x")
    (root / "pyproject.toml").write_text('[project]\nname = "app"\n\n[tool.flow]\nplugins = []\n')


@pytest.fixture
def project(tmp_path: Path, flow_home: Path) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    _tree(root)
    return root


@pytest.fixture
def run(flow: FlowRunner):
    def run(cwd: Path, *args: str) -> Result:
        return flow.invoke(clean, *args, cwd=cwd)

    return run


def test_is_bound_to_the_python_kit() -> None:
    assert FLOW_BUILD_KITS == ["flow-kit-python"]


def test_dry_run_lists_and_keeps_everything(project: Path, run) -> None:
    result = run(project / "src", "--dry-run")
    assert result.exit_code == 0, result.output
    listed = {line.removeprefix("would remove ") for line in result.output.splitlines()}
    assert listed == {"dist/", "build/", "app.egg-info/", "src/app.egg-info/",
                      "src/app/__pycache__/", "tests/__pycache__/", ".pytest_cache/"}
    assert (project / "dist").is_dir() and (project / "src/app/__pycache__").is_dir()


def test_removes_leftovers_from_the_project_root_not_the_cwd(project: Path, run) -> None:
    result = run(project / "tests")
    assert result.exit_code == 0, result.output
    assert "removed 7 paths" in result.output
    for gone in ("dist", "build", "app.egg-info", "src/app.egg-info", "src/app/__pycache__",
                 "tests/__pycache__", ".pytest_cache"):
        assert not (project / gone).exists(), gone
    for kept in (".venv/lib/__pycache__", ".git/__pycache__", "docs/build-notes", "keep/dist",
                 "pyproject.toml"):
        assert (project / kept).exists(), kept


def test_nothing_to_clean(project: Path, run) -> None:
    assert run(project).exit_code == 0
    result = run(project)
    assert result.output.strip() == "nothing to clean"


def test_refuses_outside_a_python_project(tmp_path: Path, run) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "__pycache__").mkdir(parents=True)
    result = run(elsewhere)  # in-process, flow's error stays an exception
    assert isinstance(result.exception, UsageError)
    assert "is not a Python project" in result.exception.message
    assert (elsewhere / "__pycache__").is_dir()


def test_a_plain_python_project_without_flow_config(tmp_path: Path, run) -> None:
    root = tmp_path / "plain"
    (root / "build").mkdir(parents=True)
    (root / "setup.py").write_text("")
    result = run(root)
    assert result.exit_code == 0, result.output
    assert not (root / "build").exists()
