"""Kit-declared hooks (issue 20 item 1), through the real CLI: a kit declares a hook in
``flow_addhooks``, its kit-bound plugin implements it and gets its own context when the kit calls
``context.hook.<name>``; the same check refuses a wrong signature and warns about an undeclared
hook at install (``flow plugin add``, the probe) and at load.

Kits and plugins are wheels (tests/wheelfactory.py) installed offline with ``flow buildkit add``
and ``flow plugin add``.
"""

from __future__ import annotations

import json
from pathlib import Path

from managed_env import ManagedEnv
from packages_support import config_bytes, env_dists, one_line_error
from wheelfactory import build_wheel, plugin_wheel

KIT = '''
import click
from flowcore.api import current, hookimpl


@hookimpl
def flow_addhooks(hooks):
    from flow_kit_demo import hookspecs

    hooks.add(hookspecs)


@hookimpl
def flow_kit_info(context):
    return {"short_name": "demo", "description": "A demo kit"}


@click.command("build")
def build():
    """Build, letting plugins in first."""
    answers = current().hook.flow_demo_before_build(target="out")
    click.echo(f"answers={answers}")


@click.command("nope")
def nope():
    """Call a hook nobody declares."""
    current().hook.flow_demo_nope(target="out")


@hookimpl
def flow_register_commands(registry):
    registry.add(build)
    registry.add(nope)
'''

SPECS = '''"""The demo kit's hooks."""
from flowcore.api import hookspec


@hookspec
def flow_demo_before_build(context, target):
    """Before the demo build. Return: a line to show."""
'''

STAMP = '''
import os

if os.environ.get("IMPORT_LOG"):
    with open(os.environ["IMPORT_LOG"], "a") as log:
        log.write("imported\\n")


@hookimpl
def flow_demo_before_build(context, target):
    greeting = context.kit_config.get("greeting", "hello")
    return f"{greeting} from {context.plugin} ({type(context).__name__}, kit {context.kit}) {target}"
'''

TYPO = STAMP + '''

@hookimpl
def flow_demo_before_biuld(context):
    return "never"
'''

WRONG = '''
@hookimpl
def flow_demo_before_build(context, target, verbose):
    return "never"
'''

ADD = ("--no-index", "--find-links")


def demo_kit(wheels: Path, name: str = "flow-kit-demo") -> Path:
    module = name.replace("-", "_")
    return build_wheel(wheels, name, {f"{module}/__init__.py": KIT.replace("flow_kit_demo", module),
                                      f"{module}/hookspecs.py": SPECS},
                       entry_points={"flow.kits": {name: module}})


def install_kit(run_flow, wheels: Path, name: str = "flow-kit-demo") -> None:
    demo_kit(wheels, name)
    r = run_flow("buildkit", "add", name, *ADD, str(wheels))
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_a_kit_hook_is_called_on_its_plugin_with_the_plugins_own_context(run_flow, flow_home,
                                                                          tmp_path):
    wheels = tmp_path / "wheels"
    install_kit(run_flow, wheels)
    plugin_wheel(wheels, "flow-plugin-stamp", STAMP, kits=["flow-kit-demo"])
    r = run_flow("plugin", "add", "flow-plugin-stamp", *ADD, str(wheels))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = run_flow("build")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == ("answers=['hello from flow-plugin-stamp (KitPluginContext, kit "
                        "flow-kit-demo) out']\n")
    # kit_config.get reads the kit's section, as the plugin guide says
    config = json.loads(config_bytes(flow_home))
    config.setdefault("kitConfig", {})["demo"] = {"greeting": "ahoy"}
    (flow_home / "config.json").write_text(json.dumps(config))
    assert run_flow("build").stdout.startswith("answers=['ahoy from flow-plugin-stamp")
    # context.hook is typed by name: a name nothing declares is an error, not an empty list
    r = run_flow("nope")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "flow: error: no hook 'flow_demo_nope' is declared by flowcore or the build kit "
        "flow-kit-demo. Check the name against the hook reference; a kit declares its hooks in "
        "flow_addhooks with hooks.add(module)")


def test_with_its_kit_inactive_the_plugin_is_not_loaded_and_says_nothing(run_flow, tmp_path):
    wheels = tmp_path / "wheels"
    install_kit(run_flow, wheels)
    plugin_wheel(wheels, "flow-plugin-stamp", STAMP, kits=["flow-kit-demo"])
    assert run_flow("plugin", "add", "flow-plugin-stamp", *ADD, str(wheels)).returncode == 0
    install_kit(run_flow, wheels, "flow-kit-other")
    assert run_flow("buildkit", "switch", "flow-kit-other").returncode == 0
    log = tmp_path / "imports.log"
    r = run_flow("build", env={"IMPORT_LOG": str(log)})
    assert (r.returncode, r.stdout, r.stderr) == (0, "answers=[]\n", "")
    r = run_flow("--help", env={"IMPORT_LOG": str(log)})
    assert r.returncode == 0 and r.stderr == ""
    assert not log.exists()


def test_an_undeclared_hook_is_warned_at_install_and_at_load(run_flow, tmp_path):
    wheels = tmp_path / "wheels"
    install_kit(run_flow, wheels)
    plugin_wheel(wheels, "flow-plugin-typo", TYPO, kits=["flow-kit-demo"])
    r = run_flow("plugin", "add", "flow-plugin-typo", *ADD, str(wheels))
    assert r.returncode == 0, r.stderr
    fix = ("Check the name against docs/hooks.md and the kit's hook reference, or install the "
           "kit that declares it")
    assert r.stderr.strip() == (
        "flow: warning: plugin 'flow-plugin-typo' implements hook 'flow_demo_before_biuld', "
        "which neither flowcore nor its kits (flow-kit-demo) declare, so flow never calls it. "
        + fix)
    r = run_flow("build")  # loads every plugin: the same check, the same warning
    assert r.returncode == 0
    assert r.stderr.strip() == (
        "flow: warning: plugin 'flow-plugin-typo' implements hook 'flow_demo_before_biuld', "
        "which neither flowcore nor the loaded kit declares, so flow never calls it. " + fix)
    assert "hello from flow-plugin-typo" in r.stdout  # its other hooks still work


def test_a_general_plugin_with_an_undeclared_hook_is_warned_at_install(run_flow, tmp_path):
    wheels = tmp_path / "wheels"
    plugin_wheel(wheels, "flow-plugin-lost", WRONG)
    r = run_flow("plugin", "add", "flow-plugin-lost", *ADD, str(wheels))
    assert r.returncode == 0, r.stderr
    assert ("plugin 'flow-plugin-lost' implements hook 'flow_demo_before_build', which flowcore "
            "does not declare (and it names no kit in FLOW_BUILD_KITS)") in r.stderr


def test_a_wrong_signature_for_a_kit_hook_is_refused_at_install(run_flow, flow_home, tmp_path):
    wheels = tmp_path / "wheels"
    install_kit(run_flow, wheels)
    before = (env_dists(flow_home / "env"), config_bytes(flow_home))
    plugin_wheel(wheels, "flow-plugin-wrong", WRONG, kits=["flow-kit-demo"])
    r = run_flow("plugin", "add", "flow-plugin-wrong", *ADD, str(wheels))
    assert r.returncode == 1
    error = one_line_error(r.stderr)
    assert error.startswith("flow: error: flow-plugin-wrong implements a hook wrongly: Plugin "
                            "'flow-plugin-wrong' for hook 'flow_demo_before_build'; hookimpl "
                            "definition: flow_demo_before_build(context, target, verbose); "
                            "Argument(s) {'verbose'} are declared in the hookimpl but can not "
                            "be found in the hookspec. Take only arguments"), error
    assert (env_dists(flow_home / "env"), config_bytes(flow_home)) == before


def test_a_wrong_signature_for_a_kit_hook_fails_the_plugin_at_load(run_flow, flow_home, tmp_path):
    """Put into the environment behind flow's back (no install check): load says the same."""
    menv = ManagedEnv(flow_home, tmp_path / "wheels")
    menv.add_wheel("flow-kit-demo", {"flow_kit_demo/__init__.py": KIT,
                                     "flow_kit_demo/hookspecs.py": SPECS},
                   entry_points={"flow.kits": {"flow-kit-demo": "flow_kit_demo"}})
    menv.add_plugin("flow-plugin-wrong", WRONG)
    menv.config(kit="flow-kit-demo", kit_plugins=["flow-plugin-wrong"])
    r = run_flow("build")
    assert r.stdout == "answers=[]\n"
    assert r.stderr.startswith("flow: warning: plugin 'flow-plugin-wrong' failed to load: Plugin "
                               "'flow-plugin-wrong' for hook 'flow_demo_before_build'; "), r.stderr
