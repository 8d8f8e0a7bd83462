"""A refused install puts back exactly what was there, and a re-add keeps where a plugin came
from (installed.json), through the real CLI, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from packages_support import config_bytes, env_listing, one_line_error

REPO = Path(__file__).resolve().parent.parent
INSTALLERS = ["uv", "pip"]

_GREET = '''import click
from flowcore import hookimpl

@click.command()
def greet():
    """Say hello."""
    click.echo("hello {tag}")

@hookimpl
def flow_register_commands(registry):
    registry.add(greet)
'''


def _plugin_dir(root: Path, version: str = "0.1.0", tag: str = "v1", broken: bool = False) -> Path:
    """A source directory of a plugin adding `flow greet` (hatchling, built offline)."""
    (root / "src" / "flow_plugin_greet").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        f'[project]\nname = "flow-plugin-greet"\nversion = "{version}"\n'
        'dependencies = ["flowcore", "click"]\n\n'
        '[project.entry-points."flow.plugins"]\nflow-plugin-greet = "flow_plugin_greet"\n')
    code = _GREET.format(tag=tag) + ("raise RuntimeError('broken on purpose')\n" if broken else "")
    (root / "src" / "flow_plugin_greet" / "__init__.py").write_text(code)
    return root


def _record(home: Path) -> dict:
    return json.loads((home / "installed.json").read_text())["packages"]


@pytest.mark.parametrize("installer", INSTALLERS)
@pytest.mark.parametrize("bump", [False, True], ids=["same-version", "new-version"])
def test_a_refused_reinstall_leaves_the_working_plugin_installed(run_flow, flow_home, tmp_path,
                                                                 installer, bump):
    env = {"FLOW_INSTALLER": installer}
    src = _plugin_dir(tmp_path / "greet")
    r = run_flow("plugin", "add", str(src), "--no-index", env=env)
    assert r.returncode == 0, r.stderr
    assert run_flow("greet").stdout == "hello v1\n"
    before = (config_bytes(flow_home), (flow_home / "installed.json").read_bytes(),
              env_listing(flow_home / "env"))

    _plugin_dir(src, version="0.2.0" if bump else "0.1.0", tag="v2", broken=True)
    r = run_flow("plugin", "add", str(src), "--no-index", env=env)
    assert r.returncode == 1
    line = one_line_error(r.stderr)
    assert "flow-plugin-greet cannot be imported (flow_plugin_greet): RuntimeError: broken on " \
           "purpose" in line and line.endswith("The config and the flow environment are unchanged")

    assert (config_bytes(flow_home), (flow_home / "installed.json").read_bytes(),
            env_listing(flow_home / "env")) == before
    assert run_flow("greet").stdout == "hello v1\n"
    r = run_flow("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (flow_home / ".env.before").exists() and not (flow_home / ".env.failed").exists()
    # A good version afterwards installs and replaces it.
    _plugin_dir(src, version="0.3.0", tag="v3")
    assert run_flow("plugin", "add", str(src), "--no-index", env=env).returncode == 0
    assert run_flow("greet").stdout == "hello v3\n"


def test_a_refused_upgrade_of_a_project_plugin_is_undone_too(run_flow, flow_home, tmp_path):
    project = tmp_path / "app"
    project.mkdir()
    (project / "flow.toml").write_text("[tool.flow]\n")
    src = _plugin_dir(tmp_path / "greet")
    assert run_flow("plugin", "add", str(src), "--no-index", cwd=project).returncode == 0
    _plugin_dir(src, tag="v2", broken=True)
    assert run_flow("plugin", "add", str(src), "--no-index", cwd=project).returncode == 1
    assert run_flow("greet", cwd=project).stdout == "hello v1\n"
    assert run_flow("doctor", cwd=project).returncode == 0


@pytest.mark.parametrize("installer", INSTALLERS)
def test_re_adding_by_name_keeps_the_recorded_source(run_flow, flow_home, installer):
    env = {"FLOW_INSTALLER": installer}
    source = REPO / "plugins" / "flow-plugin-env"
    r = run_flow("plugin", "add", str(source), "--no-index", env=env)
    assert r.returncode == 0, r.stderr
    recorded = _record(flow_home)["flow-plugin-env"]
    assert recorded["source"] == str(source)

    r = run_flow("plugin", "add", "flow-plugin-env", env=env)  # already installed: satisfied
    assert r.returncode == 0, r.stderr
    assert "installed plugin flow-plugin-env 0.1.0 as a general plugin" in r.stdout
    assert _record(flow_home)["flow-plugin-env"] == recorded

    shutil.rmtree(flow_home / "env")
    r = run_flow("doctor", "--fix", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"reinstalled flow-plugin-env 0.1.0 from {source}" in r.stdout
    assert run_flow("env").returncode == 0


def test_a_new_version_by_name_records_the_name(run_flow, flow_home, tmp_path):
    from package_index import INDEX_ENV, start_package_index
    from packages_support import simple_plugin

    first = simple_plugin(tmp_path / "wheels", "flow-plugin-hello")
    assert run_flow("plugin", "add", str(first), "--no-index").returncode == 0
    assert _record(flow_home)["flow-plugin-hello"]["source"] == str(first)
    simple_plugin(tmp_path / "newer", "flow-plugin-hello", version="0.2.0")
    with start_package_index(tmp_path / "newer", tmp_path / "index") as index:
        r = run_flow("plugin", "add", "flow-plugin-hello>=0.2",
                     env={**INDEX_ENV, "FLOW_INDEX_URL": index.url})
    assert r.returncode == 0, r.stderr
    assert _record(flow_home)["flow-plugin-hello"]["source"] == "flow-plugin-hello>=0.2"
    assert _record(flow_home)["flow-plugin-hello"]["version"] == "0.2.0"
