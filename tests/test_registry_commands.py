"""CommandRegistry through the real `flow` CLI: sources in help, duplicates and precedence,
built-ins that cannot be overridden, and a command manifest cache that is never stale."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from managed_env import ManagedEnv
from test_plugins_loading import command_plugin, commands_in_help


@pytest.fixture
def menv(flow_home: Path, tmp_path: Path) -> ManagedEnv:
    return ManagedEnv(flow_home, tmp_path / "wheels")


def manifest_files(flow_home: Path) -> list[Path]:
    return sorted((flow_home / "cache").glob("commands-*.json"))


def test_two_plugins_registering_the_same_command_first_by_precedence_wins(run_flow, menv):
    menv.add_plugin("flow-plugin-a", command_plugin("same"))
    menv.add_plugin("flow-plugin-b", command_plugin("same"))
    menv.add_plugin("flow-plugin-bound", command_plugin("same"), kits=["flow-kit-k"])
    menv.add_plugin("flow-kit-k", command_plugin("build"), group="flow.kits")
    # general plugins in config order b, a; the kit-bound plugin outranks both
    menv.config(kit="flow-kit-k", kit_plugins=["flow-plugin-bound"],
                plugins=["flow-plugin-b", "flow-plugin-a"])
    r = run_flow("--help")
    assert commands_in_help(r.stdout)["same"] == "flow-plugin-bound"
    assert r.stderr.splitlines() == [
        "flow: warning: command 'same' of plugin 'flow-plugin-b' is skipped: plugin "
        "'flow-plugin-bound' already provides it",
        "flow: warning: command 'same' of plugin 'flow-plugin-a' is skipped: plugin "
        "'flow-plugin-bound' already provides it",
    ]
    assert "plugin=flow-plugin-bound" in run_flow("same").stdout
    # without the kit-bound plugin, the first general plugin in load order wins
    menv.config(plugins=["flow-plugin-b", "flow-plugin-a"])
    r = run_flow("same")
    assert "plugin=flow-plugin-b" in r.stdout
    assert r.stderr.strip() == ("flow: warning: command 'same' of plugin 'flow-plugin-a' is "
                                "skipped: plugin 'flow-plugin-b' already provides it")


def test_a_plugin_registering_buildkit_cannot_override_the_built_in(run_flow, menv):
    menv.add_plugin("flow-plugin-hijack", '''
@click.command("buildkit")
def buildkit():
    """Hijacked."""
    click.echo("HIJACKED")

@click.command("config")
def config():
    click.echo("HIJACKED")

@hookimpl
def flow_register_commands(registry):
    registry.add(buildkit)
    registry.add(config)
    registry.add(buildkit, name="plugin")
''')
    menv.config(plugins=["flow-plugin-hijack"])
    r = run_flow("--help")
    cmds = commands_in_help(r.stdout)
    assert cmds["buildkit"] == cmds["config"] == cmds["plugin"] == "built-in"
    assert "Hijacked" not in r.stdout
    for name in ("buildkit", "config", "plugin"):
        assert (f"flow: warning: plugin 'flow-plugin-hijack' registers command '{name}', which "
                f"is built-in and cannot be overridden; skipped") in r.stderr.splitlines()
    r = run_flow("config", "--json")
    assert "HIJACKED" not in r.stdout and r.returncode == 0


def test_install_and_removal_show_up_without_touching_the_cache(run_flow, menv):
    menv.config(plugins=["flow-plugin-late"])
    r = run_flow("--help")
    assert "late" not in commands_in_help(r.stdout)
    assert "not installed" in r.stderr
    menv.add_plugin("flow-plugin-late", command_plugin("late"))
    r = run_flow("--help")
    assert commands_in_help(r.stdout)["late"] == "flow-plugin-late"
    assert r.stderr == ""
    # upgrade: the new version's commands replace the old ones
    menv.add_plugin("flow-plugin-late", command_plugin("later"), version="0.2.0")
    cmds = commands_in_help(run_flow("--help").stdout)
    assert "later" in cmds and "late" not in cmds
    assert run_flow("later").returncode == 0
    menv.remove("flow-plugin-late")
    r = run_flow("--help")
    # still in the config, so its command stays, unavailable, naming the fix (issue 11)
    assert commands_in_help(r.stdout)["later"] == "flow-plugin-late"
    assert re.search(r"\n  later +\(unavailable: it failed to load; see 'flow later'\)", r.stdout)
    r = run_flow("later")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "flow: error: command 'later' cannot run: its plugin 'flow-plugin-late' failed to "
        "load: it is not installed in the flow environment. Reinstall it with: flow doctor "
        "--fix (or, to stop using it: flow plugin delete flow-plugin-late)")


def test_editing_an_installed_plugin_refreshes_its_commands(run_flow, menv, flow_home):
    menv.add_plugin("flow-plugin-edit", command_plugin("before-edit"))
    menv.config(plugins=["flow-plugin-edit"])
    assert "before-edit" in commands_in_help(run_flow("--help").stdout)
    module = next((flow_home / "env").glob("lib/python*/site-packages/flow_plugin_edit/__init__.py"))
    module.write_text(module.read_text().replace("before-edit", "after-edit-longer"))
    cmds = commands_in_help(run_flow("--help").stdout)
    assert "after-edit-longer" in cmds and "before-edit" not in cmds


def forge_manifest(flow_home: Path, change) -> None:
    """Rewrite the cached manifest in place, keeping its fingerprint valid."""
    [path] = manifest_files(flow_home)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_cached_manifest_pointing_at_an_uninstalled_plugin(run_flow, menv, flow_home):
    menv.add_plugin("flow-plugin-real", command_plugin("real"))
    menv.config(plugins=["flow-plugin-real"])
    assert run_flow("--help").returncode == 0

    def add_ghost(data):
        data["commands"].append({"name": "ghost", "help": "Gone.", "source": "flow-plugin-gone",
                                 "kind": "general"})
        data["plugins"].append({"name": "flow-plugin-gone", "kind": "general",
                                "entry_points": ["flow_plugin_gone"], "hooks":
                                ["flow_register_commands"], "files": []})

    forge_manifest(flow_home, add_ghost)
    assert "ghost" in run_flow("--help").stdout  # the forged cache is believed for help...
    r = run_flow("ghost")  # ...but dispatch finds the module gone, rebuilds, and refuses
    assert r.returncode == 2
    assert "no such command 'ghost'" in r.stderr
    assert "ghost" not in run_flow("--help").stdout
    assert run_flow("real").returncode == 0


def test_a_stale_manifest_never_runs_the_wrong_code(run_flow, menv, flow_home):
    menv.add_plugin("flow-plugin-one", command_plugin("one"))
    menv.add_plugin("flow-plugin-two", command_plugin("two"))
    menv.config(plugins=["flow-plugin-one", "flow-plugin-two"])
    assert run_flow("--help").returncode == 0

    def swap_owner(data):  # claim that plugin one owns "two"
        for command in data["commands"]:
            if command["name"] == "two":
                command["source"] = "flow-plugin-one"

    forge_manifest(flow_home, swap_owner)
    r = run_flow("two")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("two: PluginContext plugin=flow-plugin-two")

    def hide(data):  # a cache that lost a command must not hide it
        data["commands"] = [c for c in data["commands"] if c["name"] != "one"]

    forge_manifest(flow_home, hide)
    r = run_flow("one")
    assert r.returncode == 0 and r.stdout.startswith("one: PluginContext plugin=flow-plugin-one")


def test_a_corrupt_manifest_is_rebuilt(run_flow, menv, flow_home):
    menv.add_plugin("flow-plugin-one", command_plugin("one"))
    menv.config(plugins=["flow-plugin-one"])
    run_flow("--help")
    [path] = manifest_files(flow_home)
    path.write_text("{ not json")
    assert "one" in commands_in_help(run_flow("--help").stdout)
    assert json.loads(path.read_text())["commands"][0]["name"] == "one"


def test_an_inactive_or_missing_kit_leaves_built_ins_working(run_flow, menv, flow_home):
    (flow_home / "config.json").write_text(json.dumps({
        "schemaVersion": 1, "activeBuildKit": "flow-kit-later",
        "buildKits": [{"name": "flow-kit-later", "installed": False, "plugins": []}]}))
    r = run_flow("--help")
    assert r.returncode == 0
    assert set(commands_in_help(r.stdout)) >= {"config"}
    # no name an index may not have (help text is wrapped to the terminal's width: compare words)
    assert "flow buildkit add PATH-OR-NAME" in " ".join(r.stdout.split())
    r = run_flow("build")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"flow: error: build kit 'flow-kit-later' (from {flow_home / 'config.json'}) is not "
        "installed. Install it with: flow buildkit add PATH-OR-NAME (a directory, a wheel, or a "
        "name from your configured index)")
    assert run_flow("config", "--json").returncode == 0


def test_a_broken_config_still_lists_built_ins(run_flow, flow_home):
    flow_home.mkdir(parents=True)
    (flow_home / "config.json").write_text("{ broken")
    r = run_flow("--help")
    assert r.returncode == 0
    assert commands_in_help(r.stdout)["config"] == "built-in"
    assert "Configuration problem:" in r.stdout and "is not valid JSON" in r.stdout


def test_unknown_command_without_an_active_kit_says_where_commands_come_from(run_flow):
    result = run_flow("publish")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "flow: error: no such command 'publish', and no build kit is active (kits add commands "
        "such as build, test and publish). See 'flow --help' for the commands there are, or "
        "install a kit: flow buildkit add PATH-OR-NAME (a directory, a wheel, or a name from "
        "your configured index)"]
