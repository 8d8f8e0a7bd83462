"""``flow clean`` on a real directory tree, through click's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from flow_plugin_pyclean import FLOW_BUILD_KITS, clean
from flowcore.cli.app import Flow
from flowcore.config import RunOptions


def _tree(root: Path) -> None:
    for d in ("dist", "build", "src/app.egg-info", "app.egg-info", "src/app/__pycache__",
              "tests/__pycache__", ".pytest_cache", ".venv/lib/__pycache__",
              ".git/__pycache__", "docs/build-notes", "keep/dist"):
        (root / d).mkdir(parents=True)
        (root / d / "f").write_text("x")
    (root / "pyproject.toml").write_text('[project]\nname = "app"\n\n[tool.flow]\nplugins = []\n')


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOW_HOME", str(tmp_path / "home"))
    root = tmp_path / "app"
    root.mkdir()
    _tree(root)
    return root


def _run(root: Path, cwd: Path, *args: str):
    flow = Flow(RunOptions(), cwd=cwd)
    return CliRunner().invoke(clean, list(args), obj=flow)


def test_is_bound_to_the_python_kit() -> None:
    assert FLOW_BUILD_KITS == ["flow-kit-python"]


def test_dry_run_lists_and_keeps_everything(project: Path) -> None:
    result = _run(project, project / "src", "--dry-run")
    assert result.exit_code == 0, result.output
    listed = {line.removeprefix("would remove ") for line in result.output.splitlines()}
    assert listed == {"dist/", "build/", "app.egg-info/", "src/app.egg-info/",
                      "src/app/__pycache__/", "tests/__pycache__/", ".pytest_cache/"}
    assert (project / "dist").is_dir() and (project / "src/app/__pycache__").is_dir()


def test_removes_leftovers_from_the_project_root_not_the_cwd(project: Path) -> None:
    result = _run(project, project / "tests")
    assert result.exit_code == 0, result.output
    assert "removed 7 paths" in result.output
    for gone in ("dist", "build", "app.egg-info", "src/app.egg-info", "src/app/__pycache__",
                 "tests/__pycache__", ".pytest_cache"):
        assert not (project / gone).exists(), gone
    for kept in (".venv/lib/__pycache__", ".git/__pycache__", "docs/build-notes", "keep/dist",
                 "pyproject.toml"):
        assert (project / kept).exists(), kept


def test_nothing_to_clean(project: Path) -> None:
    assert _run(project, project).exit_code == 0
    result = _run(project, project)
    assert result.output.strip() == "nothing to clean"


def test_refuses_outside_a_python_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flowcore._base.errors import UsageError

    monkeypatch.setenv("FLOW_HOME", str(tmp_path / "home"))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "__pycache__").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(clean, [], obj=Flow(RunOptions(), cwd=elsewhere))
    assert isinstance(result.exception, UsageError)
    assert "is not a Python project" in result.exception.message
    assert (elsewhere / "__pycache__").is_dir()


def test_a_plain_python_project_without_flow_config(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_HOME", str(tmp_path / "home"))
    root = tmp_path / "plain"
    (root / "build").mkdir(parents=True)
    (root / "setup.py").write_text("")
    monkeypatch.chdir(root)
    result = CliRunner().invoke(clean, [], obj=Flow(RunOptions(), cwd=root))
    assert result.exit_code == 0, result.output
    assert not (root / "build").exists()
