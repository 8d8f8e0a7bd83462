"""`flow plugin list/add/delete` in global and project scope, through the real CLI, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packages_support import env_dists, kit_wheel, one_line_error, read_config, simple_plugin


@pytest.fixture
def wheels(tmp_path: Path, wheelhouse: Path) -> Path:
    dest = tmp_path / "wheels"
    kit_wheel(dest, "flow-kit-python")
    kit_wheel(dest, "flow-kit-other")
    simple_plugin(dest, "flow-plugin-general")
    simple_plugin(dest, "flow-plugin-other", kits=["flow-kit-other"])
    return dest


@pytest.fixture
def flow(run_flow, wheels, wheelhouse):
    def run(*args: str, **kw):
        if "add" in args:
            args = (*args, "--no-index", "--find-links", str(wheels), "--find-links",
                    str(wheelhouse))
        return run_flow(*args, **kw)

    return run


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n[tool.flow]  # flow settings\n'
        'buildkit = "flow-kit-python"\n'
        'plugins = [\n    "flow-plugin-env",  # bug reports\n]\n')
    return root


def test_repo_plugins_general_and_kit_bound(flow, flow_home):
    r = flow("plugin", "add", "flow-plugin-env", "flow-plugin-pyclean")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "installed plugin flow-plugin-env 0.1.0 as a general plugin",
        "installed plugin flow-plugin-pyclean 0.1.0 for build kit flow-kit-python "
        "(declared, not installed)"]
    config = read_config(flow_home)
    assert config["plugins"] == ["flow-plugin-env"]
    assert config["buildKits"] == [{"name": "flow-kit-python", "installed": False,
                                    "plugins": ["flow-plugin-pyclean"]}]
    # No active kit yet: only general plugins are listed.
    assert flow("plugin", "list").stdout.splitlines() == ["flow-plugin-env  0.1.0  (general)"]
    assert flow("buildkit", "add", "flow-kit-python").returncode == 0
    assert flow("plugin", "list").stdout.splitlines() == [
        "flow-plugin-pyclean  0.1.0  (kit flow-kit-python)",
        "flow-plugin-env      0.1.0  (general)"]


def test_global_list_shows_only_the_active_kits_plugins(flow, flow_home):
    assert flow("buildkit", "add", "flow-kit-python", "flow-kit-other").returncode == 0
    assert flow("plugin", "add", "flow-plugin-pyclean", "flow-plugin-other",
                "flow-plugin-general").returncode == 0
    listed = json.loads(flow("plugin", "list", "--json").stdout)
    assert listed["scope"] == "global"
    assert [(p["name"], p["kind"], p["version"]) for p in listed["plugins"]] == [
        ("flow-plugin-pyclean", "kit flow-kit-python", "0.1.0"),
        ("flow-plugin-general", "general", "0.1.0")]


def test_project_scope_add_list_delete(flow, flow_home, project):
    assert flow("plugin", "add", "flow-plugin-general").returncode == 0  # global
    r = flow("plugin", "add", "flow-plugin-pyclean", cwd=project)
    assert r.returncode == 2 and "is not trusted" in r.stderr  # its [tool.flow] lists plugins
    assert not (project / ".flow").exists()
    assert flow("trust", cwd=project).returncode == 0
    r = flow("plugin", "add", "flow-plugin-pyclean", cwd=project)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"installed plugin flow-plugin-pyclean 0.1.0 into project {project}"
    # Into the project's own environment and [tool.flow] plugins, comments kept.
    assert env_dists(project / ".flow" / "env") == {"flow_plugin_pyclean"}
    assert env_dists(flow_home / "env") == {"flow_plugin_general"}
    assert (project / "pyproject.toml").read_text() == (
        '[project]\nname = "app"\n\n[tool.flow]  # flow settings\n'
        'buildkit = "flow-kit-python"\n'
        'plugins = [\n    "flow-plugin-env",  # bug reports\n    "flow-plugin-pyclean",\n]\n')
    assert read_config(flow_home)["buildKits"] == []
    assert flow("plugin", "list", cwd=project).stdout.splitlines() == [
        "flow-plugin-env      (not installed)  (project)",
        "flow-plugin-pyclean  0.1.0  (project)",
        "flow-plugin-general  0.1.0  (general)"]
    r = flow("plugin", "delete", "flow-plugin-pyclean", cwd=project)
    assert r.returncode == 0, r.stderr
    assert env_dists(project / ".flow" / "env") == set()
    assert '"flow-plugin-pyclean"' not in (project / "pyproject.toml").read_text()
    assert "# bug reports" in (project / "pyproject.toml").read_text()
    # -g inside the project works on the global scope.
    assert flow("-g", "plugin", "delete", "flow-plugin-general", cwd=project).returncode == 0
    assert read_config(flow_home)["plugins"] == []


def test_delete_removes_the_plugin_from_every_kit(flow, flow_home, wheels):
    simple_plugin(wheels, "flow-plugin-multi", kits=["flow-kit-python", "flow-kit-other"])
    assert flow("plugin", "add", "flow-plugin-multi", "flow-plugin-general").returncode == 0
    assert [k["plugins"] for k in read_config(flow_home)["buildKits"]] == [
        ["flow-plugin-multi"], ["flow-plugin-multi"]]
    r = flow("plugin", "delete", "flow-plugin-multi")
    assert r.returncode == 0, r.stderr
    config = read_config(flow_home)
    assert [k["plugins"] for k in config["buildKits"]] == [[], []]
    assert config["plugins"] == ["flow-plugin-general"]
    assert env_dists(flow_home / "env") == {"flow_plugin_general"}


def test_deleting_a_plugin_that_is_not_installed_lists_the_installed_ones(flow, flow_home):
    assert flow("plugin", "add", "flow-plugin-general", "flow-plugin-pyclean").returncode == 0
    before = (flow_home / "config.json").read_bytes()
    r = flow("plugin", "delete", "flow-plugin-nope")
    assert r.returncode == 1
    assert one_line_error(r.stderr) == ("flow: error: plugin 'flow-plugin-nope' is not "
                                        "installed. Installed plugins: flow-plugin-general, "
                                        "flow-plugin-pyclean")
    assert (flow_home / "config.json").read_bytes() == before
    assert env_dists(flow_home / "env") == {"flow_plugin_general", "flow_plugin_pyclean"}


def test_delete_without_a_name_and_no_terminal(flow):
    assert flow("plugin", "add", "flow-plugin-general").returncode == 0
    r = flow("plugin", "delete")
    assert r.returncode == 2
    assert "Pass it as an argument: flow plugin delete NAME" in one_line_error(r.stderr)
