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
                                          "test-env", "test-args"}


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
    from flowcore.errors import UsageError

    with pytest.raises(UsageError, match="build-isolation = 'sometimes' is not one of"):
        commands._choice("sometimes", ("auto", "true", "false"), "build-isolation")
    assert commands._choice(False, ("auto", "true", "false"), "build-isolation") == "false"


def test_visible_site_dirs_are_on_flows_path() -> None:
    from flow_kit_python.testenv import visible_site_dirs

    dirs = visible_site_dirs()
    assert dirs and all(d in sys.path for d in dirs)
