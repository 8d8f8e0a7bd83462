"""The kit's hooks, its settings and the commands it builds, without a flow run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import flow_kit_python
from flow_kit_python import commands


def test_kit_info_names_the_python_section() -> None:
    info = flow_kit_python.flow_kit_info()
    assert info["short_name"] == "python"
    assert set(info["config_schema"]) == {"build-isolation", "build-tool", "dist-dir",
                                          "test-env", "test-args", "test-groups"}


def test_templates_only_for_this_kit() -> None:
    templates = flow_kit_python.flow_create_templates(kit="flow-kit-python")
    assert [t["name"] for t in templates] == ["library", "cli"]
    for t in templates:
        assert (Path(t["source"]) / "copier.yml").is_file()
        assert t["kit"] == "flow-kit-python"
    assert flow_kit_python.flow_create_templates(kit="flow-kit-cloudbuild") == []


def test_registers_build_and_test() -> None:
    added = []

    class Registry:
        def add(self, command, name=None):
            added.append(name or command.name)

    flow_kit_python.flow_register_commands(Registry())
    assert added == ["build", "test"]


@pytest.mark.parametrize("var", commands.OFFLINE_VARS)
def test_offline_is_any_of_the_offline_variables(var: str, monkeypatch) -> None:
    for name in commands.OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)
    assert not commands.offline()
    monkeypatch.setenv(var, "0")
    assert not commands.offline()
    monkeypatch.setenv(var, "1")
    assert commands.offline()


def test_isolated_build_uses_plain_uv_build(tmp_path: Path) -> None:
    cmd = commands.build_command(tmp_path, tmp_path / "dist", isolated=True, tool="uv")
    assert Path(cmd[0]).name == "uv" and cmd[1] == "build"
    assert "--no-build-isolation" not in cmd and cmd[-1] == str(tmp_path)


def test_build_without_isolation_uses_the_kits_interpreter(tmp_path: Path) -> None:
    cmd = commands.build_command(tmp_path, tmp_path / "dist", isolated=False, tool="uv")
    assert cmd[cmd.index("--no-build-isolation") + 1:cmd.index("--no-build-isolation") + 3] == [
        "--python", commands.kit_python()]
    assert Path(commands.kit_python()).exists()


def test_python_m_build_when_asked(tmp_path: Path) -> None:
    pytest.importorskip("build")
    cmd = commands.build_command(tmp_path, tmp_path / "dist", isolated=False, tool="build")
    assert cmd[1:3] == ["-m", "build"] and "--no-isolation" in cmd


def test_bad_setting_is_a_usage_error() -> None:
    from flowcore.api import UsageError

    with pytest.raises(UsageError, match="build-isolation = 'sometimes' is not one of"):
        commands._choice("sometimes", ("auto", "true", "false"), "build-isolation")
    assert commands._choice(False, ("auto", "true", "false"), "build-isolation") == "false"


def test_visible_site_dirs_are_on_flows_path() -> None:
    from flow_kit_python.testenv import visible_site_dirs

    dirs = visible_site_dirs()
    assert dirs and all(d in sys.path for d in dirs)


@pytest.mark.parametrize(("poetry", "pep440"), [
    ("^1.2.3", ">=1.2.3,<2"), ("^0.2.3", ">=0.2.3,<0.3"), ("^0.0.3", ">=0.0.3,<0.0.4"),
    ("^0", ">=0,<1"), ("~1.2.3", ">=1.2.3,<1.3"), ("~1.2", ">=1.2,<1.3"), ("~1", ">=1,<2"),
    ("*", ""), ("1.2.3", "==1.2.3"), (">=1,<2", ">=1,<2"), (">=1 <2", ">=1,<2"),
    ("~=1.4", "~=1.4"),
])
def test_poetry_constraints_in_pep440(poetry: str, pep440: str) -> None:
    from flow_kit_python.testenv import poetry_constraint

    assert poetry_constraint(poetry) == pep440


def test_poetry_requirements_in_pep508(tmp_path: Path) -> None:
    from flow_kit_python.testenv import poetry_requirement

    assert poetry_requirement("python", "^3.11", tmp_path) is None
    assert poetry_requirement("pytest-mock", {"version": "^3.10", "extras": ["x"],
                                              "python": "^3.8"}, tmp_path) == (
        'pytest-mock[x]>=3.10,<4 ; python_version >= "3.8" and python_version < "4"')
    assert poetry_requirement("lib", {"path": "../lib"}, tmp_path) == (
        f"lib @ {(tmp_path / '../lib').resolve().as_uri()}")
    with pytest.raises(ValueError):
        poetry_requirement("pytest", "^7 || ^8", tmp_path)


def test_dependency_groups_include_and_order(tmp_path: Path) -> None:
    from flow_kit_python.testenv import test_requirements

    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "1"\n[project.optional-dependencies]\ntest = ["a"]\n'
        '[dependency-groups]\nlint = ["ruff"]\ntest = ["pytest", {include-group = "lint"}]\n'
        'dev = ["b"]\n[tool.poetry.group.test.dependencies]\nc = "^1.0"\n')
    assert test_requirements(tmp_path, None) == (["pytest", "ruff", "c>=1.0,<2", "b"], ["test"])
    assert test_requirements(tmp_path, ["dev"]) == (["b"], ["test"])
