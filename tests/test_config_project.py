"""Project config discovery ([tool.flow] / flow.toml), overrides, and a missing kit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PYPROJECT = """\
[project]
name = "demo"
version = "1.0"

# flow settings
[tool.flow]
buildkit = "flow-kit-python"
plugins = ["flow-plugin-y"]
"""


def _describe(run_flow, *args: str, cwd: Path) -> dict:
    result = run_flow(*args, "config", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _install_kit(flow_home: Path, name: str) -> None:
    flow_home.mkdir(parents=True, exist_ok=True)
    (flow_home / "config.json").write_text(json.dumps({
        "schemaVersion": 1, "activeBuildKit": "flow-kit-global",
        "buildKits": [{"name": name, "installed": True, "plugins": ["flow-plugin-kitbound"]},
                      {"name": "flow-kit-global", "installed": True, "plugins": []}],
        "plugins": ["flow-plugin-general"]}))


def test_project_found_walking_up(run_flow, flow_home: Path, tmp_path: Path) -> None:
    _install_kit(flow_home, "flow-kit-python")
    project = tmp_path / "proj"
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    untrusted = _describe(run_flow, cwd=deep)  # the project's plugins load once it is trusted
    assert [p["value"] for p in untrusted["plugins"]] == ["flow-plugin-general"]
    assert untrusted["projectTrust"]["value"] == "not trusted: plugins flow-plugin-y unused"
    assert run_flow("trust", cwd=deep).returncode == 0
    described = _describe(run_flow, cwd=deep)
    assert described["projectTrust"]["value"] == "trusted"
    assert described["projectRoot"]["value"] == str(project)
    assert described["scope"]["value"] == "project"
    assert described["activeBuildKit"] == {
        "value": "flow-kit-python", "from": str(project / "pyproject.toml")}
    names = [(p["value"], p["kind"]) for p in described["plugins"]]
    assert names == [("flow-plugin-y", "project"), ("flow-plugin-general", "general")]


def test_global_flag_ignores_project(run_flow, flow_home: Path, tmp_path: Path) -> None:
    _install_kit(flow_home, "flow-kit-python")
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    described = _describe(run_flow, "-g", cwd=tmp_path)
    assert described["scope"]["value"] == "global"
    assert described["activeBuildKit"]["value"] == "flow-kit-global"
    names = [p["value"] for p in described["plugins"]]
    assert names == ["flow-plugin-general"]


def test_build_kit_option_wins(run_flow, flow_home: Path, tmp_path: Path) -> None:
    _install_kit(flow_home, "flow-kit-python")
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    described = _describe(run_flow, "-k", "flow-kit-other", cwd=tmp_path)
    assert described["activeBuildKit"]["value"] == "flow-kit-other"
    assert "command line" in described["activeBuildKit"]["from"]


def test_pyproject_without_flow_table_is_skipped(run_flow, flow_home: Path, tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    (outer / "flow.toml").write_text('buildkit = "flow-kit-x"\n')
    (inner / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.black]\nline-length = 100\n')
    described = _describe(run_flow, cwd=inner)
    assert described["projectRoot"]["value"] == str(outer)
    assert described["activeBuildKit"]["value"] == "flow-kit-x"


def test_root_and_config_overrides(run_flow, flow_home: Path, tmp_path: Path) -> None:
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "flow.toml").write_text('[tool.flow]\nbuildkit = "kit-a"\n')
    (b / "custom.toml").write_text('[tool.flow]\nbuildkit = "kit-b"\n')
    # --root: config looked for in root only
    d = _describe(run_flow, "--root", str(a), cwd=tmp_path)
    assert (d["projectRoot"]["value"], d["activeBuildKit"]["value"]) == (str(a), "kit-a")
    assert d["projectRoot"]["from"] == "command line (--root)"
    # --config: root is its folder
    d = _describe(run_flow, "--config", str(b / "custom.toml"), cwd=tmp_path)
    assert (d["projectRoot"]["value"], d["activeBuildKit"]["value"]) == (str(b), "kit-b")
    # both: each as given
    d = _describe(run_flow, "--root", str(a), "--config", str(b / "custom.toml"), cwd=tmp_path)
    assert (d["projectRoot"]["value"], d["activeBuildKit"]["value"]) == (str(a), "kit-b")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--root", "missing-dir"), "is not a directory"),
        (("--root", "."), "has no flow project config"),
        (("--config", "nope.toml"), "does not exist"),
    ],
)
def test_bad_overrides_are_usage_errors(run_flow, tmp_path: Path, args, needle) -> None:
    result = run_flow(*args, "config", cwd=tmp_path)
    assert result.returncode == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_invalid_toml_is_reported(run_flow, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.flow]\nbuildkit = \n")
    result = run_flow("config", cwd=tmp_path)
    assert result.returncode == 2
    assert "pyproject.toml is not valid TOML" in result.stderr
    assert "line 2" in result.stderr


def test_wrong_project_shape_names_key(run_flow, tmp_path: Path) -> None:
    (tmp_path / "flow.toml").write_text('[tool.flow]\nplugins = "flow-plugin-y"\n')
    result = run_flow("config", cwd=tmp_path)
    assert result.returncode == 2
    assert "key 'plugins'" in result.stderr


def test_project_kit_not_installed_names_install_command(run_flow, flow_home: Path,
                                                        tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    assert run_flow("trust", cwd=tmp_path).returncode == 0
    result = run_flow("build", cwd=tmp_path)
    assert result.returncode == 2
    assert "build kit 'flow-kit-python'" in result.stderr
    assert "not installed" in result.stderr
    assert "flow buildkit add PATH-OR-NAME (a directory, a wheel, or a name" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # built-in commands keep working in that project
    assert run_flow("config", cwd=tmp_path).returncode == 0
