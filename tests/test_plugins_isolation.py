"""Bad plugins never take flow down: each is reported in one line naming it and the fix, and
skipped; --strict-plugins / FLOW_STRICT_PLUGINS=1 turn the report into an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from managed_env import ManagedEnv
from test_plugins_loading import command_plugin


@pytest.fixture
def menv(flow_home: Path, tmp_path: Path) -> ManagedEnv:
    menv = ManagedEnv(flow_home, tmp_path / "wheels")
    menv.add_plugin("flow-plugin-good", command_plugin("good"))
    return menv


def fix_of(name: str, cause: str) -> str:
    if cause == "it is not installed in the flow environment":  # the config lists it: reinstall
        return (f"Reinstall it with: flow doctor --fix (or, to stop using it: flow plugin "
                f"delete {name})")
    return f"Remove it with: flow plugin delete {name}"


def warning_of(name: str, cause: str) -> str:
    return f"flow: warning: plugin '{name}' failed to load: {cause}. {fix_of(name, cause)}"


def assert_isolated(run_flow, name: str, cause: str) -> None:
    """The bad plugin is reported in one line; good plugins and built-ins keep working."""
    r = run_flow("--help")
    assert r.returncode == 0
    assert r.stderr.strip() == warning_of(name, cause)
    assert "good" in r.stdout and "config" in r.stdout
    r = run_flow("good")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("good: PluginContext")
    assert r.stderr.strip() == warning_of(name, cause)
    r = run_flow("config", "--json")
    assert r.returncode == 0

    for strict in (("--strict-plugins", "good"), ("good",)):
        env = {} if strict[0] == "--strict-plugins" else {"FLOW_STRICT_PLUGINS": "1"}
        r = run_flow(*strict, env=env)
        assert r.returncode == 1
        assert r.stderr.strip() == (
            f"flow: error: plugin '{name}' failed to load: {cause}. {fix_of(name, cause)} "
            "(or run without --strict-plugins)")
        assert r.stdout == ""
    # the management commands stay usable under strict, so the fix can be applied
    assert run_flow("config", "--json", env={"FLOW_STRICT_PLUGINS": "1"}).returncode == 0


def test_a_plugin_whose_import_raises(run_flow, menv):
    menv.add_plugin("flow-plugin-crash", "raise RuntimeError('boom at import')\n")
    menv.config(plugins=["flow-plugin-crash", "flow-plugin-good"])
    assert_isolated(run_flow, "flow-plugin-crash", "RuntimeError: boom at import")


def test_a_plugin_whose_hook_raises(run_flow, menv):
    menv.add_plugin("flow-plugin-hookfail", '''
@hookimpl
def flow_register_commands(registry):
    raise ValueError("no commands today")
''')
    menv.config(plugins=["flow-plugin-hookfail", "flow-plugin-good"])
    assert_isolated(run_flow, "flow-plugin-hookfail",
                    "flow_register_commands raised ValueError: no commands today")


def test_an_entry_point_that_names_a_missing_module(run_flow, menv):
    menv.add_wheel("flow-plugin-ghost", {"flow_plugin_ghost_files/__init__.py": ""},
                   entry_points={"flow.plugins": {"ghost": "no_such_module_anywhere"}})
    menv.config(plugins=["flow-plugin-ghost", "flow-plugin-good"])
    assert_isolated(run_flow, "flow-plugin-ghost",
                    "ModuleNotFoundError: No module named 'no_such_module_anywhere'")


def test_a_configured_plugin_that_is_not_installed(run_flow, menv):
    menv.config(plugins=["flow-plugin-absent", "flow-plugin-good"])
    assert_isolated(run_flow, "flow-plugin-absent", "it is not installed in the flow environment")


def test_a_plugin_implementing_an_unknown_hook_is_warned_and_keeps_its_other_hooks(run_flow, menv):
    menv.add_plugin("flow-plugin-typo", command_plugin("typo") + '''
@hookimpl
def flow_register_command(registry):
    pass
''')
    menv.config(plugins=["flow-plugin-typo", "flow-plugin-good"])
    r = run_flow("--help")
    assert r.returncode == 0
    assert r.stderr.strip() == (
        "flow: warning: plugin 'flow-plugin-typo' implements hook 'flow_register_command', "
        "which neither flowcore nor the loaded kit declares, so flow never calls it. Check the "
        "name against docs/hooks.md and the kit's hook reference, or install the kit that "
        "declares it")
    assert "typo" in r.stdout and "good" in r.stdout
    r = run_flow("typo")
    assert r.returncode == 0 and r.stderr == "", r.stderr  # warned when the manifest was built


def test_a_plugin_implementing_a_hook_with_wrong_arguments(run_flow, menv):
    menv.add_plugin("flow-plugin-args", '''
@hookimpl
def flow_before_command(command, verbose):
    pass
''')
    menv.config(plugins=["flow-plugin-args", "flow-plugin-good"])
    r = run_flow("--help")
    assert "plugin 'flow-plugin-args' failed to load: Plugin 'flow-plugin-args' for hook " \
        "'flow_before_command'; hookimpl definition: flow_before_command(command, verbose); " \
        "Argument(s) {" in r.stderr


def test_a_plugin_for_another_plugin_api(run_flow, menv):
    menv.add_plugin("flow-plugin-future", command_plugin("future"), api=">=2")
    menv.config(plugins=["flow-plugin-future", "flow-plugin-good"])
    assert_isolated(run_flow, "flow-plugin-future",
                    "it supports flow plugin API >=2 but this flowcore provides API 1")


def test_a_failing_before_hook_does_not_stop_the_command(run_flow, menv):
    menv.add_plugin("flow-plugin-badtimer", '''
@hookimpl
def flow_before_command(command_name):
    raise RuntimeError("timer broke")

@hookimpl
def flow_after_command(command_name):
    click.echo("after hook of a plugin that already failed must not run")
''')
    menv.config(plugins=["flow-plugin-badtimer", "flow-plugin-good"])
    r = run_flow("good")
    assert r.returncode == 0
    assert r.stdout.startswith("good: PluginContext")
    assert "must not run" not in r.stdout
    assert r.stderr.strip() == (
        "flow: warning: plugin 'flow-plugin-badtimer' failed in flow_before_command: "
        "RuntimeError: timer broke. Remove it with: flow plugin delete flow-plugin-badtimer")


def test_a_broken_kit_names_the_buildkit_fix(run_flow, menv):
    menv.add_plugin("flow-kit-broken", "import nonexistent_dependency_xyz\n", group="flow.kits")
    menv.config(kit="flow-kit-broken", plugins=["flow-plugin-good"])
    r = run_flow("good")
    assert r.returncode == 0
    assert r.stderr.strip() == (
        "flow: warning: build kit 'flow-kit-broken' failed to load: ModuleNotFoundError: No "
        "module named 'nonexistent_dependency_xyz'. Remove it with: flow buildkit delete "
        "flow-kit-broken")
