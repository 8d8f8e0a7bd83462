"""PluginSystem through the real `flow` CLI: load order, scope, -k, FLOW_LOAD_PLUGINS, contexts,
the hooks around every command, and the hooks kits call (templates, publish)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from managed_env import ManagedEnv, install, make_env, plugin_wheel
from offline import offline_env


def command_plugin(command: str, extra: str = "") -> str:
    """Plugin body: one command that prints its name and the context it runs with."""
    func = command.replace("-", "_")
    return f'''
@click.command("{command}")
def {func}():
    """Run {command}."""
    from flowcore.api import current
    ctx = current()
    click.echo(f"{command}: {{type(ctx).__name__}} plugin={{ctx.plugin}} "
               f"kit={{getattr(ctx, 'kit', None)}} short={{getattr(ctx, 'kit_short_name', None)}}")

@hookimpl
def flow_register_commands(registry, context):
    registry.add({func})
{extra}
'''


KIT_INFO = '''
@hookimpl
def flow_kit_info(context):
    return {"short_name": "demo", "description": "A demo kit", "config_schema": {"x": "an x"}}
'''


@pytest.fixture
def menv(flow_home: Path, tmp_path: Path) -> ManagedEnv:
    return ManagedEnv(flow_home, tmp_path / "wheels")


@pytest.fixture
def world(menv: ManagedEnv) -> ManagedEnv:
    """A kit with a kit-bound plugin, a second kit, and two general plugins, all installed."""
    menv.add_plugin("flow-kit-demo", command_plugin("build", KIT_INFO), group="flow.kits")
    menv.add_plugin("flow-kit-other", command_plugin("other-build"), group="flow.kits")
    menv.add_plugin("flow-plugin-bound", command_plugin("bound"), kits=["flow-kit-demo"])
    menv.add_plugin("flow-plugin-proj", command_plugin("proj"))
    menv.add_plugin("flow-plugin-gen", command_plugin("gen"))
    menv.add_plugin("flow-plugin-gen2", command_plugin("gen2"))
    data = {
        "schemaVersion": 1,
        "activeBuildKit": "flow-kit-demo",
        "buildKits": [
            {"name": "flow-kit-demo", "installed": True, "plugins": ["flow-plugin-bound"]},
            {"name": "flow-kit-other", "installed": True, "plugins": []},
        ],
        "plugins": ["flow-plugin-gen", "flow-plugin-gen2"],
    }
    (menv.flow_home / "config.json").write_text(json.dumps(data))
    return menv


def commands_in_help(stdout: str) -> dict[str, str]:
    """{command: source} from the Commands section of `flow --help`."""
    section = stdout.split("Commands:", 1)[1]
    out = {}
    for line in section.splitlines():
        parts = line.split()
        if parts and line.startswith("  ") and not line.startswith("    ") and "[" in line:
            out[parts[0]] = line.rsplit("[", 1)[1].rstrip("]")
    return out


def test_global_scope_loads_kit_kit_bound_and_general_plugins(run_flow, world):
    r = run_flow("--help")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    cmds = commands_in_help(r.stdout)
    assert cmds["build"] == "flow-kit-demo"
    assert cmds["bound"] == "flow-plugin-bound"
    assert cmds["gen"] == "flow-plugin-gen"
    assert cmds["config"] == "built-in"
    # not active, not in the config for this scope: not loaded
    assert "other-build" not in cmds and "proj" not in cmds
    # alphabetical
    names = list(commands_in_help(r.stdout))
    assert names == sorted(names)


def test_kit_and_kit_bound_plugins_get_the_kit_context_general_ones_the_core_context(
        run_flow, world):
    r = run_flow("build")
    assert r.stdout.strip() == "build: KitPluginContext plugin=flow-kit-demo kit=flow-kit-demo short=demo"
    r = run_flow("bound")
    assert r.stdout.strip() == ("bound: KitPluginContext plugin=flow-plugin-bound kit=flow-kit-demo "
                                "short=demo")
    r = run_flow("gen")
    assert r.stdout.strip() == "gen: PluginContext plugin=flow-plugin-gen kit=None short=None"


def test_project_scope_loads_the_projects_kit_and_plugins(run_flow, world, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "p"\n[tool.flow]\nbuildkit = "flow-kit-other"\n'
        'plugins = ["flow-plugin-proj"]\n')
    untrusted = run_flow("--help", cwd=project)  # a project's own plugins: only once trusted
    assert "proj" not in commands_in_help(untrusted.stdout) and "not trusted" in untrusted.stderr
    assert run_flow("trust", cwd=project).returncode == 0
    cmds = commands_in_help(run_flow("--help", cwd=project).stdout)
    assert cmds.get("other-build") == "flow-kit-other"
    assert cmds.get("proj") == "flow-plugin-proj"
    assert cmds.get("gen") == "flow-plugin-gen"  # general plugins load everywhere
    assert "build" not in cmds and "bound" not in cmds
    r = run_flow("proj", cwd=project)
    assert "KitPluginContext plugin=flow-plugin-proj kit=flow-kit-other" in r.stdout

    # -g: the global scope even inside the project
    cmds = commands_in_help(run_flow("-g", "--help", cwd=project).stdout)
    assert {"build", "bound", "gen"} <= set(cmds) and "proj" not in cmds
    assert run_flow("-g", "bound", cwd=project).returncode == 0

    # -k overrides the project's kit, keeps the project's plugins
    cmds = commands_in_help(run_flow("-k", "flow-kit-demo", "--help", cwd=project).stdout)
    assert "build" in cmds and "other-build" not in cmds and "proj" in cmds
    # options given after --help count too
    cmds = commands_in_help(run_flow("--help", "-k", "flow-kit-demo", cwd=project).stdout)
    assert "build" in cmds and "other-build" not in cmds


def test_flow_load_plugins_selects_plugins_but_never_drops_the_kit(run_flow, world):
    cmds = commands_in_help(run_flow("--help", env={"FLOW_LOAD_PLUGINS": "flow-plugin-gen2"}).stdout)
    assert {"build", "gen2"} <= set(cmds)
    assert "gen" not in cmds and "bound" not in cmds
    cmds = commands_in_help(run_flow("--help", env={"FLOW_LOAD_PLUGINS": ""}).stdout)
    assert "build" in cmds
    assert not {"gen", "gen2", "bound"} & set(cmds)
    # and back to everything: each selection has its own cached manifest
    cmds = commands_in_help(run_flow("--help").stdout)
    assert {"build", "bound", "gen", "gen2"} <= set(cmds)


def test_an_installed_distribution_not_named_in_the_config_is_not_loaded(run_flow, menv):
    menv.add_plugin("flow-plugin-stray", command_plugin("stray"))
    menv.config()
    assert "stray" not in run_flow("--help").stdout
    assert run_flow("stray").returncode == 2


def test_a_plugin_reads_and_writes_its_own_config_section(run_flow, menv, flow_home, tmp_path):
    menv.add_plugin("flow-plugin-cfg", '''
@click.command()
@click.argument("value")
def remember(value):
    """Store a value in this plugin's section."""
    from flowcore.api import current
    ctx = current()
    before = ctx.config.section.get("value")
    ctx.config.set("value", value)
    click.echo(f"{before} -> {ctx.config.section['value']}")
    click.echo("activeBuildKit" in ctx.config.read()["global"])

@hookimpl
def flow_register_commands(registry):
    registry.add(remember)
''')
    menv.config(plugins=["flow-plugin-cfg"])
    r = run_flow("remember", "one")
    assert r.stdout.splitlines() == ["None -> one", "True"], r.stderr
    assert json.loads((flow_home / "config.json").read_text())["pluginConfig"] == {
        "cfg": {"value": "one"}}
    # inside a project, [tool.flow.<short>] overrides the global section key by key
    project = tmp_path / "p"
    project.mkdir()
    (project / "flow.toml").write_text('[tool.flow]\n[tool.flow.cfg]\nvalue = "from-project"\n')
    r = run_flow("remember", "two", cwd=project)
    assert r.stdout.splitlines()[0] == "from-project -> from-project"
    assert json.loads((flow_home / "config.json").read_text())["pluginConfig"]["cfg"] == {
        "value": "two"}


TIMER = '''
import json, os
def _log(entry):
    with open(os.environ["TIMER_LOG"], "a") as fh:
        fh.write(json.dumps(entry) + "\\n")

@hookimpl
def flow_before_command(context, command_name, args):
    _log({"before": command_name, "args": args, "plugin": context.plugin})

@hookimpl
def flow_after_command(command_name, exit_code, duration):
    _log({"after": command_name, "code": exit_code, "duration": duration >= 0})
'''


def test_before_and_after_hooks_wrap_every_command_but_not_help(run_flow, menv, tmp_path):
    log = tmp_path / "timer.log"
    menv.add_plugin("flow-plugin-timer", TIMER)
    menv.add_plugin("flow-plugin-hello", command_plugin("hello"))
    menv.config(plugins=["flow-plugin-timer", "flow-plugin-hello"])
    env = {"TIMER_LOG": str(log)}
    assert run_flow("--help", env=env).returncode == 0
    assert run_flow("hello", "--help", env=env).returncode == 0
    assert not log.exists()
    assert run_flow("hello", env=env).returncode == 0
    assert run_flow("config", "--json", env=env).returncode == 0  # built-ins too
    assert run_flow("config", "set", "activeBuildKit", "x", env=env).returncode == 2
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries == [
        {"before": "hello", "args": [], "plugin": "flow-plugin-timer"},
        {"after": "hello", "code": 0, "duration": True},
        {"before": "config", "args": ["--json"], "plugin": "flow-plugin-timer"},
        {"after": "config", "code": 0, "duration": True},
        {"before": "config", "args": ["set", "activeBuildKit", "x"],
         "plugin": "flow-plugin-timer"},
        {"after": "config", "code": 2, "duration": True},
    ]


CALL_HOOKS = r'''
import json, sys
from flowcore.cli.app import Flow
from flowcore.config import RunOptions
flow = Flow(RunOptions())
templates = flow.plugins.call("flow_create_templates", kit="flow-kit-demo")
checks = flow.plugins.call("flow_demo_checks", task={"kit": "flow-kit-demo"})
targets = flow.plugins.call("flow_demo_targets", task={"kit": "flow-kit-demo"})
print(json.dumps({"templates": templates, "checks": checks, "targets": targets}))
'''


def test_kits_call_template_and_their_own_hooks_in_load_order(menv, flow_home, tmp_path):
    menv.add_plugin("flow-kit-demo", KIT_INFO + '''
from flowcore.api import hookspec

class DemoHooks:  # the kit's own hooks (a kit usually keeps them in a hookspecs module)
    @hookspec
    def flow_demo_checks(context, task):
        """Checks."""
    @hookspec
    def flow_demo_targets(context, task):
        """Targets."""

@hookimpl
def flow_addhooks(hooks):
    hooks.add(DemoHooks)
@hookimpl
def flow_create_templates(kit, context):
    return [{"name": "basic", "description": "d", "source": "/t/basic", "kit": kit}]
@hookimpl
def flow_demo_checks(task):
    return [{"name": "kit-check", "ok": True, "message": "fine"}]
''', group="flow.kits")
    menv.add_plugin("flow-plugin-extra", '''
@hookimpl
def flow_create_templates(kit, context):
    if kit == context.kit:
        return [{"name": "extra", "description": "d", "source": "https://x/y.git", "kit": kit}]
@hookimpl
def flow_demo_checks(task, context):
    return [{"name": "extra-check", "ok": False, "message": f"set it in {context.kit_short_name}"}]
@hookimpl
def flow_demo_targets(task):
    return [{"name": "s3", "kind": "s3", "url": "s3://bucket"}]
''', kits=["flow-kit-demo"])
    menv.add_plugin("flow-plugin-broken-checks", '''
@hookimpl
def flow_demo_checks(task):
    raise RuntimeError("checks exploded")
''')
    menv.config(kit="flow-kit-demo", kit_plugins=["flow-plugin-extra"],
                plugins=["flow-plugin-broken-checks"])
    r = subprocess.run([sys.executable, "-c", CALL_HOOKS], capture_output=True, text=True,
                       env=offline_env(flow_home), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # each plugin's answer is one list, in load order: kit, kit-bound, general
    assert [t["name"] for group in out["templates"] for t in group] == ["basic", "extra"]
    assert [c["name"] for group in out["checks"] for c in group] == ["kit-check", "extra-check"]
    assert out["checks"][1][0]["message"] == "set it in demo"
    assert out["targets"] == [[{"name": "s3", "kind": "s3", "url": "s3://bucket"}]]
    assert r.stderr.strip() == (
        "flow: warning: plugin 'flow-plugin-broken-checks' failed in flow_demo_checks: "
        "RuntimeError: checks exploded. Remove it with: flow plugin delete "
        "flow-plugin-broken-checks")


def test_project_plugins_come_from_the_project_environment(run_flow, menv, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "flow.toml").write_text('[tool.flow]\nplugins = ["flow-plugin-local"]\n')
    env_dir = make_env(project / ".flow" / "env")
    install(env_dir, plugin_wheel(tmp_path / "w2", "flow-plugin-local", command_plugin("local")))
    menv.config()
    assert run_flow("local", cwd=project).returncode == 2  # not trusted yet
    assert run_flow("trust", cwd=project).returncode == 0
    r = run_flow("local", cwd=project)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("local: PluginContext plugin=flow-plugin-local")
    assert run_flow("-g", "local", cwd=project).returncode == 2
