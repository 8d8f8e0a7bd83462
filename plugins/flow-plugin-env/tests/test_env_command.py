"""``flow env``: in-process through ``flow.invoke`` (click's CliRunner with a real core instance
of a temporary FLOW_HOME, no mocks), and once end to end, installed from this source directory
and run by the real ``flow`` (flowcore.testing's fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flow_plugin_env import env
from flowcore.testing import FlowRunner

PLUGIN = Path(__file__).resolve().parent.parent


@pytest.fixture
def home(flow_home: Path) -> Path:
    flow_home.mkdir()
    (flow_home / "config.json").write_text(json.dumps({
        "activeBuildKit": "flow-kit-demo",
        "buildKits": [{"name": "flow-kit-demo", "installed": True, "plugins": ["flow-plugin-k"]}],
        "plugins": ["flow-plugin-env"],
    }))
    return flow_home


def test_reports_global_scope_kit_and_plugins(home: Path, flow: FlowRunner, tmp_path: Path) -> None:
    result = flow.invoke(env, "--json", cwd=tmp_path)
    assert result.exit_code == 0, result
    report = json.loads(result.output)
    assert report["FLOW_HOME"] == str(home)
    assert report["scope"] == "global"
    assert report["projectRoot"] is None
    assert report["activeKit"] == "flow-kit-demo"
    assert [(p["name"], p["kind"]) for p in report["plugins"]] == [
        ("flow-plugin-k", "kit"), ("flow-plugin-env", "general")]


def test_reports_project_scope(home: Path, flow: FlowRunner, make_project) -> None:
    # trust=True is what `flow trust` does: a project's own plugins load only then
    project = make_project("app", kit="flow-kit-other", plugins=["flow-plugin-p"], trust=True)
    result = flow.invoke(env, cwd=project)
    assert result.exit_code == 0, result
    assert "scope: project" in result.output
    assert f"project root: {project}" in result.output
    assert "active kit: flow-kit-other" in result.output
    assert "flow-plugin-p (not installed) (project)" in result.output


def test_works_without_a_core_instance() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(env, [])
    assert result.exit_code == 0, result.output
    assert "scope: (unknown)" in result.output


def test_installed_and_run_by_flow(flow: FlowRunner, flow_home: Path) -> None:
    installed = flow.install_plugin(PLUGIN)
    assert "installed plugin flow-plugin-env 0.1.0 as a general plugin" in installed.output
    result = flow.run("env", "--json")
    assert result.exit_code == 0, result
    report = json.loads(result.output)
    assert report["FLOW_HOME"] == str(flow_home) and report["scope"] == "global"
    assert [(p["name"], p["kind"], p["version"]) for p in report["plugins"]] == [
        ("flow-plugin-env", "general", "0.1.0")]
