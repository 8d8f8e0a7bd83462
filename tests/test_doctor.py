"""`flow doctor` compares the managed environment with the config; `--fix` rebuilds it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from packages_support import env_dists, kit_wheel, read_config, simple_plugin, site_packages


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    dest = tmp_path / "wheels"
    kit_wheel(dest, "flow-kit-alpha")
    simple_plugin(dest, "flow-plugin-general")
    simple_plugin(dest, "flow-plugin-bound", kits=["flow-kit-alpha"])
    return dest


@pytest.fixture
def installed(run_flow, wheels, flow_home):
    r = run_flow("buildkit", "add", "flow-kit-alpha", "--no-index", "--find-links", str(wheels))
    assert r.returncode == 0, r.stderr
    r = run_flow("plugin", "add", "flow-plugin-general", "flow-plugin-bound", "--no-index",
                 "--find-links", str(wheels))
    assert r.returncode == 0, r.stderr
    return flow_home / "env"


def test_healthy(run_flow, installed):
    r = run_flow("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "ok: all 3 kits and plugins in the config are installed and load"


def test_lost_environment_is_rebuilt_from_the_config(run_flow, installed, flow_home):
    shutil.rmtree(installed)
    r = run_flow("doctor")
    assert r.returncode == 1
    assert sorted(r.stdout.splitlines()) == [
        f"missing: flow-kit-alpha (global): kit in the config, no environment at {installed}",
        f"missing: flow-plugin-bound (global): plugin in the config, no environment at "
        f"{installed}",
        f"missing: flow-plugin-general (global): plugin in the config, no environment at "
        f"{installed}"]
    assert r.stderr.strip() == "flow: error: 3 problems found. Run: flow doctor --fix"
    r = run_flow("doctor", "--fix")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reinstalled flow-plugin-general 0.1.0 from flow-plugin-general" in r.stdout
    assert env_dists(installed) == {"flow_kit_alpha", "flow_plugin_general", "flow_plugin_bound"}
    assert run_flow("doctor").returncode == 0


def test_broken_extra_and_stale_are_reported_and_fixed(run_flow, installed, flow_home, wheels):
    sp = site_packages(installed)
    # broken: the module is gone; extra: installed behind flow's back; stale: base .pth.
    shutil.rmtree(sp / "flow_plugin_general")
    from uv import find_uv_bin

    simple_plugin(wheels, "flow-plugin-stray")
    subprocess.run([find_uv_bin(), "pip", "install", "-q", "--python", str(installed / "bin/python"),
                    "--no-deps", "--no-index", "--find-links", str(wheels), "flow-plugin-stray"],
                   check=True, env={"UV_NO_CONFIG": "1", "UV_OFFLINE": "1",
                                    "UV_CACHE_DIR": str(flow_home.parent / "uv-cache"),
                                    "PATH": "/usr/bin:/bin"})
    (sp / "_flowcore_base.pth").write_text("")
    before = json.dumps(read_config(flow_home))
    r = run_flow("doctor")
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert "broken: environment (global): it does not see flowcore's current packages" in lines
    assert any(ln.startswith("broken: flow-plugin-general (global): ") and "No module named"
               in ln for ln in lines), lines
    assert "extra: flow-plugin-stray (global): installed (0.1.0) but not in the config" in lines
    r = run_flow("doctor", "--fix")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "removed flow-plugin-stray (global)" in r.stdout
    assert env_dists(installed) == {"flow_kit_alpha", "flow_plugin_general", "flow_plugin_bound"}
    assert (sp / "flow_plugin_general" / "__init__.py").exists()
    assert run_flow("doctor").returncode == 0
    assert json.dumps(read_config(flow_home)) == before  # the config is the truth: unchanged


def test_project_plugins_are_checked_in_the_project_environment(run_flow, installed, wheels,
                                                                 tmp_path):
    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.flow]\nplugins = []\n')
    simple_plugin(wheels, "flow-plugin-local")
    r = run_flow("plugin", "add", "flow-plugin-local", "--no-index", "--find-links", str(wheels),
                 cwd=project)
    assert r.returncode == 0, r.stderr
    assert run_flow("doctor", cwd=project).returncode == 0
    shutil.rmtree(project / ".flow" / "env")
    r = run_flow("doctor", cwd=project)
    assert r.returncode == 1
    assert "missing: flow-plugin-local (project)" in r.stdout
    assert run_flow("doctor", "--fix", cwd=project).returncode == 0
    assert env_dists(project / ".flow" / "env") == {"flow_plugin_local"}
