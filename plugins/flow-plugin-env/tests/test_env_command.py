"""``flow env`` run through click's CliRunner with a real core instance (no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flow_plugin_env import env
from flowcore.config import trust
from flowcore.cli.app import Flow
from flowcore.config import RunOptions


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({
        "activeBuildKit": "flow-kit-demo",
        "buildKits": [{"name": "flow-kit-demo", "installed": True, "plugins": ["flow-plugin-k"]}],
        "plugins": ["flow-plugin-env"],
    }))
    monkeypatch.setenv("FLOW_HOME", str(home))
    return home


def test_reports_global_scope_kit_and_plugins(home: Path, tmp_path: Path) -> None:
    flow = Flow(RunOptions(), cwd=tmp_path)
    result = CliRunner().invoke(env, ["--json"], obj=flow)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["FLOW_HOME"] == str(home)
    assert report["scope"] == "global"
    assert report["projectRoot"] is None
    assert report["activeKit"] == "flow-kit-demo"
    assert [(p["name"], p["kind"]) for p in report["plugins"]] == [
        ("flow-plugin-k", "kit"), ("flow-plugin-env", "general")]


def test_reports_project_scope(home: Path, tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[tool.flow]\nbuildkit = "flow-kit-other"\nplugins = ["flow-plugin-p"]\n')
    trust.record(project)  # what `flow trust` does: a project's own plugins load only then
    flow = Flow(RunOptions(), cwd=project)
    result = CliRunner().invoke(env, [], obj=flow)
    assert result.exit_code == 0, result.output
    assert "scope: project" in result.output
    assert f"project root: {project}" in result.output
    assert "active kit: flow-kit-other" in result.output
    assert "flow-plugin-p (not installed) (project)" in result.output


def test_works_without_a_core_instance() -> None:
    result = CliRunner().invoke(env, [])
    assert result.exit_code == 0, result.output
    assert "scope: (unknown)" in result.output
