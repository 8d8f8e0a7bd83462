"""PackageManager through the real `flow` CLI: the managed environment, offline installs,
refusals and rollback. Every install is offline (`--no-index`, machine config switched off)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from packages_support import (
    config_bytes,
    env_dists,
    env_listing,
    env_python_sees,
    kit_wheel,
    one_line_error,
    read_config,
    simple_plugin,
    site_packages,
)
from wheelfactory import build_wheel, plugin_wheel

INSTALLERS = ["uv", "pip"]


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    return tmp_path / "wheels"


@pytest.mark.parametrize("installer", INSTALLERS)
def test_offline_install_uses_flowcores_own_packages(run_flow, flow_home, wheels, installer):
    simple_plugin(wheels, "flow-plugin-hello")
    r = run_flow("plugin", "add", "flow-plugin-hello", "--no-index", "--find-links", str(wheels),
                 env={"FLOW_INSTALLER": installer})
    assert r.returncode == 0, r.stderr
    assert "installed plugin flow-plugin-hello 0.1.0 as a general plugin" in r.stdout
    env_dir = flow_home / "env"
    # Installed into the managed env under FLOW_HOME, nothing of flowcore's installed twice.
    assert env_dists(env_dir) == {"flow_plugin_hello"}
    assert not (site_packages(Path(sys.prefix)) / "flow_plugin_hello").exists()
    # The env sees flowcore and click from flowcore's own environment.
    import click

    import flowcore

    assert env_python_sees(env_dir, "flowcore") == flowcore.__file__
    assert env_python_sees(env_dir, "click") == click.__file__
    assert read_config(flow_home)["plugins"] == ["flow-plugin-hello"]


def test_installs_the_repo_plugins_from_wheels_and_from_source(run_flow, flow_home, wheelhouse):
    r = run_flow("plugin", "add", "flow-plugin-env", "--no-index", "--find-links",
                 str(wheelhouse))
    assert r.returncode == 0, r.stderr
    source = Path(__file__).resolve().parent.parent / "plugins" / "flow-plugin-pyclean"
    r = run_flow("plugin", "add", str(source), "--no-index")
    assert r.returncode == 0, r.stderr
    assert env_dists(flow_home / "env") == {"flow_plugin_env", "flow_plugin_pyclean"}
    record = (flow_home / "installed.json").read_text()
    assert str(source) in record and str(wheelhouse) in record


@pytest.mark.parametrize("installer", INSTALLERS)
def test_plugin_needing_a_newer_click_is_refused(run_flow, flow_home, wheels, installer):
    simple_plugin(wheels, "flow-plugin-ok")
    assert run_flow("plugin", "add", "flow-plugin-ok", "--no-index", "--find-links",
                    str(wheels)).returncode == 0
    before_cfg, before_env = config_bytes(flow_home), env_listing(flow_home / "env")
    simple_plugin(wheels, "flow-plugin-greedy", requires=("flowcore", "click>=99"))
    r = run_flow("plugin", "add", "flow-plugin-greedy", "--no-index", "--find-links",
                 str(wheels), env={"FLOW_INSTALLER": installer})
    assert r.returncode == 1
    from importlib.metadata import version

    line = one_line_error(r.stderr)
    assert f"flow-plugin-greedy needs click>=99 but flowcore's environment has click " \
           f"{version('click')}" in line
    assert config_bytes(flow_home) == before_cfg
    assert env_listing(flow_home / "env") == before_env


@pytest.mark.parametrize("installer", INSTALLERS)
def test_a_newer_click_on_offer_is_never_installed(run_flow, flow_home, wheels, installer):
    """Even when the wheel that would satisfy it is available, flowcore's click stays alone."""
    build_wheel(wheels, "click", {"click/__init__.py": "raise SystemExit('fake click')\n"},
                version="99.0", requires=())
    simple_plugin(wheels, "flow-plugin-greedy", requires=("flowcore", "click>=99"))
    r = run_flow("plugin", "add", "flow-plugin-greedy", "--no-index", "--find-links",
                 str(wheels), env={"FLOW_INSTALLER": installer})
    assert r.returncode == 1
    line = one_line_error(r.stderr)
    assert "click" in line and "flowcore" in line
    assert env_dists(flow_home / "env") == set()
    assert read_config(flow_home).get("plugins", []) == []


@pytest.mark.parametrize("spec", ["flow-plugin-does-not-exist", "./no/such/dir",
                                  "missing-0.1.0-py3-none-any.whl"])
def test_spec_that_does_not_exist(run_flow, flow_home, wheels, spec):
    simple_plugin(wheels, "flow-plugin-ok")
    assert run_flow("plugin", "add", "flow-plugin-ok", "--no-index", "--find-links",
                    str(wheels)).returncode == 0
    before_cfg, before_env = config_bytes(flow_home), env_listing(flow_home / "env")
    r = run_flow("plugin", "add", spec, "--no-index", "--find-links", str(wheels))
    assert r.returncode == 1
    line = one_line_error(r.stderr)
    assert spec.lstrip("./").split("/")[0] in line
    assert "unchanged" in line
    assert config_bytes(flow_home) == before_cfg
    assert env_listing(flow_home / "env") == before_env


def test_spec_that_fails_to_build(run_flow, flow_home, tmp_path):
    broken = tmp_path / "flow-plugin-broken"
    broken.mkdir()
    (broken / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "no_such_backend"\n\n'
        '[project]\nname = "flow-plugin-broken"\nversion = "0.1"\n')
    r = run_flow("plugin", "add", str(broken), "--no-index")
    assert r.returncode == 1
    line = one_line_error(r.stderr)
    assert "cannot install" in line and "flow-plugin-broken" in line
    assert config_bytes(flow_home) is None
    assert not (flow_home / "env").exists()  # the first install failed: no environment left


@pytest.mark.parametrize("installer", INSTALLERS)
def test_distribution_without_entry_point_is_refused_and_removed(run_flow, flow_home, wheels,
                                                                  installer):
    build_wheel(wheels, "helper-lib", {"helper_lib/__init__.py": "X = 1\n"}, requires=())
    build_wheel(wheels, "flow-plugin-noep", {"flow_plugin_noep/__init__.py": "X = 1\n"},
                requires=("flowcore", "click", "helper-lib"))
    r = run_flow("plugin", "add", "flow-plugin-noep", "--no-index", "--find-links", str(wheels),
                 env={"FLOW_INSTALLER": installer})
    assert r.returncode == 1
    line = one_line_error(r.stderr)
    assert "flow-plugin-noep is not a flow plugin: it has no flow.plugins entry point" in line
    # Nothing left installed: neither the plugin nor the dependency it brought.
    assert env_dists(flow_home / "env") == set()
    assert config_bytes(flow_home) is None


def test_incompatible_plugin_api_is_refused_with_versions(run_flow, flow_home, wheels):
    simple_plugin(wheels, "flow-plugin-future", api=">=2")
    r = run_flow("plugin", "add", "flow-plugin-future", "--no-index", "--find-links", str(wheels))
    assert r.returncode == 1
    line = one_line_error(r.stderr)
    assert "flow-plugin-future supports flow plugin API >=2 but this flowcore provides API 1" \
        in line
    assert env_dists(flow_home / "env") == set()
    assert config_bytes(flow_home) is None


def test_plugin_that_fails_to_import_is_refused(run_flow, flow_home, wheels):
    plugin_wheel(wheels, "flow-plugin-crash", "raise RuntimeError('boom at import')\n")
    r = run_flow("plugin", "add", "flow-plugin-crash", "--no-index", "--find-links", str(wheels))
    assert r.returncode == 1
    assert "RuntimeError: boom at import" in one_line_error(r.stderr)
    assert env_dists(flow_home / "env") == set()


def test_kit_and_plugin_commands_point_at_each_other(run_flow, flow_home, wheels):
    kit_wheel(wheels, "flow-kit-demo")
    simple_plugin(wheels, "flow-plugin-ok")
    r = run_flow("plugin", "add", "flow-kit-demo", "--no-index", "--find-links", str(wheels))
    assert r.returncode == 1
    assert "flow-kit-demo is a build kit, not a plugin. Use: flow buildkit add flow-kit-demo" \
        in one_line_error(r.stderr)
    r = run_flow("buildkit", "add", "flow-plugin-ok", "--no-index", "--find-links", str(wheels))
    assert r.returncode == 1
    assert "Use: flow plugin add flow-plugin-ok" in one_line_error(r.stderr)
    assert env_dists(flow_home / "env") == set()
    assert config_bytes(flow_home) is None


def test_a_failed_upgrade_restores_the_previous_version(run_flow, flow_home, wheels):
    simple_plugin(wheels, "flow-plugin-up", version="1.0")
    assert run_flow("plugin", "add", "flow-plugin-up", "--no-index", "--find-links",
                    str(wheels)).returncode == 0
    before_cfg = config_bytes(flow_home)
    simple_plugin(wheels, "flow-plugin-up", version="2.0", api=">=7")
    r = run_flow("plugin", "add", "flow-plugin-up==2.0", "--no-index", "--find-links",
                 str(wheels))
    assert r.returncode == 1, r.stdout
    assert "API >=7" in one_line_error(r.stderr)
    assert env_listing(flow_home / "env") >= {"flow_plugin_up-1.0.dist-info"}
    assert "flow_plugin_up-2.0.dist-info" not in env_listing(flow_home / "env")
    assert config_bytes(flow_home) == before_cfg


def test_a_requirement_that_flowcore_provides_is_refused(run_flow, flow_home):
    r = run_flow("plugin", "add", "click", "--no-index")
    assert r.returncode == 1
    assert "click is part of flowcore's own environment" in one_line_error(r.stderr)


def test_five_parallel_adds_all_end_up_in_the_config(flow_home, wheels, tmp_path):
    from offline import FLOW, offline_env

    names = [f"flow-plugin-par{i}" for i in range(5)]
    for name in names:
        simple_plugin(wheels, name)
    procs = [subprocess.Popen([*FLOW, "plugin", "add", name, "--no-index", "--find-links",
                               str(wheels)], cwd=tmp_path, env=offline_env(flow_home),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in names]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    assert sorted(read_config(flow_home)["plugins"]) == names
    assert env_dists(flow_home / "env") == {n.replace("-", "_") for n in names}


def test_progress_is_quiet_when_not_a_terminal(run_flow, flow_home, wheels):
    simple_plugin(wheels, "flow-plugin-ok")
    r = run_flow("plugin", "add", "flow-plugin-ok", "--no-index", "--find-links", str(wheels))
    assert r.returncode == 0
    assert r.stderr == ""
    assert r.stdout.strip() == "installed plugin flow-plugin-ok 0.1.0 as a general plugin"


def test_managed_env_survives_and_is_repointed(run_flow, flow_home, wheels):
    """The env lives under FLOW_HOME; a stale base .pth (flowcore reinstalled elsewhere) is
    rewritten by the next install."""
    simple_plugin(wheels, "flow-plugin-a")
    simple_plugin(wheels, "flow-plugin-b")
    assert run_flow("plugin", "add", "flow-plugin-a", "--no-index", "--find-links",
                    str(wheels)).returncode == 0
    pth = site_packages(flow_home / "env") / "_flowcore_base.pth"
    good = pth.read_text()
    pth.write_text("import site; site.addsitedir('/nowhere/site-packages')\n")
    assert run_flow("plugin", "add", "flow-plugin-b", "--no-index", "--find-links",
                    str(wheels)).returncode == 0
    assert pth.read_text() == good
    assert read_config(flow_home)["plugins"] == ["flow-plugin-a", "flow-plugin-b"]
