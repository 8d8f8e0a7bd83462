"""`flow buildkit list/add/delete/switch` through the real CLI, offline, from a fresh FLOW_HOME."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packages_support import env_dists, kit_wheel, one_line_error, read_config, simple_plugin


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    dest = tmp_path / "wheels"
    for name in ("flow-kit-alpha", "flow-kit-beta", "flow-kit-python"):
        kit_wheel(dest, name)
    simple_plugin(dest, "flow-plugin-bound", kits=["flow-kit-python", "flow-kit-alpha"])
    return dest


@pytest.fixture
def flow(run_flow, wheels):
    """run_flow with the offline wheel directory added to every add command."""

    def run(*args: str, **kw):
        if len(args) >= 2 and args[1] == "add":
            args = (*args, "--no-index", "--find-links", str(wheels))
        return run_flow(*args, **kw)

    return run


def test_first_kit_becomes_active_and_list_marks_it(flow, flow_home):
    r = flow("buildkit", "add", "flow-kit-alpha")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["installed build kit flow-kit-alpha 0.1.0",
                                     "active build kit: flow-kit-alpha"]
    r = flow("buildkit", "add", "flow-kit-beta")
    assert r.stdout.splitlines() == ["installed build kit flow-kit-beta 0.1.0"]
    assert read_config(flow_home)["activeBuildKit"] == "flow-kit-alpha"
    r = flow("buildkit", "list")
    assert r.stdout.splitlines() == ["* flow-kit-alpha 0.1.0", "  flow-kit-beta 0.1.0"]
    assert env_dists(flow_home / "env") == {"flow_kit_alpha", "flow_kit_beta"}


def test_declared_kit_is_listed_and_keeps_its_plugins_when_added(flow, flow_home):
    assert flow("buildkit", "add", "flow-kit-alpha").returncode == 0
    r = flow("plugin", "add", "flow-plugin-bound")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("installed plugin flow-plugin-bound 0.1.0 for build kits "
                                "flow-kit-python (declared, not installed), flow-kit-alpha")
    r = flow("buildkit", "list", "-a")
    assert r.stdout.splitlines() == [
        "* flow-kit-alpha 0.1.0", "    flow-plugin-bound 0.1.0",
        "  flow-kit-python (declared, not installed)", "    flow-plugin-bound 0.1.0"]
    r = flow("buildkit", "add", "flow-kit-python")
    assert r.returncode == 0, r.stderr
    kits = {k["name"]: k for k in read_config(flow_home)["buildKits"]}
    assert kits["flow-kit-python"] == {"name": "flow-kit-python", "installed": True,
                                       "plugins": ["flow-plugin-bound"]}
    listed = json.loads(flow("buildkit", "list", "--json").stdout)
    assert [(k["name"], k["installed"], k["active"]) for k in listed["kits"]] == [
        ("flow-kit-alpha", True, True), ("flow-kit-python", True, False)]


def test_switch(flow, flow_home, tmp_path):
    for kit in ("flow-kit-alpha", "flow-kit-beta"):
        assert flow("buildkit", "add", kit).returncode == 0
    r = flow("buildkit", "switch", "flow-kit-beta")
    assert r.returncode == 0, r.stderr
    assert read_config(flow_home)["activeBuildKit"] == "flow-kit-beta"
    assert flow("buildkit", "list").stdout.splitlines()[1] == "* flow-kit-beta 0.1.0"


def test_switch_to_a_kit_that_is_not_installed_names_the_add_command(flow, flow_home):
    assert flow("plugin", "add", "flow-plugin-bound").returncode == 0  # declares flow-kit-python
    r = flow("buildkit", "switch", "flow-kit-python")
    assert r.returncode == 2
    assert one_line_error(r.stderr) == ("flow: error: build kit 'flow-kit-python' is not "
                                        "installed. Install it with: flow buildkit add "
                                        "PATH-OR-NAME (a directory, a wheel, or a name from "
                                        "your configured index)")


def test_switch_inside_a_project_edits_the_project_keeping_comments(flow, flow_home, tmp_path):
    for kit in ("flow-kit-alpha", "flow-kit-beta"):
        assert flow("buildkit", "add", kit).returncode == 0
    project = tmp_path / "app"
    project.mkdir()
    text = ('[project]\nname = "app"  # the app\n\n[tool.flow]\n# which kit builds this\n'
            'buildkit = "flow-kit-alpha"\n')
    (project / "pyproject.toml").write_text(text)
    r = flow("buildkit", "switch", "flow-kit-beta", cwd=project)
    assert r.returncode == 0, r.stderr
    assert (project / "pyproject.toml").read_text() == text.replace(
        'buildkit = "flow-kit-alpha"', 'buildkit = "flow-kit-beta"')
    assert read_config(flow_home)["activeBuildKit"] == "flow-kit-alpha"
    assert flow("-g", "buildkit", "switch", "flow-kit-beta", cwd=project).returncode == 0
    assert read_config(flow_home)["activeBuildKit"] == "flow-kit-beta"


def test_switch_and_delete_without_a_name_and_no_terminal(flow):
    assert flow("buildkit", "add", "flow-kit-alpha").returncode == 0
    for command in ("switch", "delete"):
        r = flow("buildkit", command)
        assert r.returncode == 2
        assert one_line_error(r.stderr) == (
            f"flow: error: no NAME given and no terminal to choose from. Pass it as an "
            f"argument: flow buildkit {command} NAME")


def test_delete(flow, flow_home):
    for kit in ("flow-kit-alpha", "flow-kit-beta"):
        assert flow("buildkit", "add", kit).returncode == 0
    assert flow("plugin", "add", "flow-plugin-bound").returncode == 0
    r = flow("buildkit", "delete", "flow-kit-alpha")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "deleted build kit flow-kit-alpha"
    config = read_config(flow_home)
    # The active kit moved on; the deleted kit stays declared because a plugin is bound to it.
    assert config["activeBuildKit"] == "flow-kit-beta"
    kits = {k["name"]: k for k in config["buildKits"]}
    assert kits["flow-kit-alpha"] == {"name": "flow-kit-alpha", "installed": False,
                                      "plugins": ["flow-plugin-bound"]}
    assert "flow_kit_alpha" not in env_dists(flow_home / "env")
    assert flow("buildkit", "delete", "flow-kit-beta").returncode == 0
    config = read_config(flow_home)
    assert config["activeBuildKit"] is None
    assert "flow-kit-beta" not in {k["name"] for k in config["buildKits"]}


def test_deleting_a_kit_that_is_not_installed_lists_the_installed_ones(flow, flow_home):
    for kit in ("flow-kit-alpha", "flow-kit-beta"):
        assert flow("buildkit", "add", kit).returncode == 0
    before = (flow_home / "config.json").read_bytes()
    r = flow("buildkit", "delete", "flow-kit-nope")
    assert r.returncode == 1
    assert one_line_error(r.stderr) == ("flow: error: build kit 'flow-kit-nope' is not "
                                        "installed. Installed build kits: flow-kit-alpha, "
                                        "flow-kit-beta")
    assert (flow_home / "config.json").read_bytes() == before


def test_list_when_empty(flow):
    r = flow("buildkit", "list")
    assert r.returncode == 0
    assert r.stdout.strip() == "no build kits. Add one with: flow buildkit add PATH-OR-NAME"
