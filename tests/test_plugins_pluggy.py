"""Hooks are called through pluggy: hook wrappers (``wrapper=True`` and old-style
``hookwrapper=True``) run, ``tryfirst``/``trylast`` order the calls, and isolation holds for
wrappers too. Real plugins, built as wheels and installed into a managed environment, run by
the real `flow` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from managed_env import ManagedEnv
from offline import offline_env
from test_plugins_loading import KIT_INFO, command_plugin

LOG = '''
import json, os
def _log(entry):
    with open(os.environ["HOOK_LOG"], "a") as fh:
        fh.write(json.dumps(entry) + "\\n")
'''


@pytest.fixture
def menv(flow_home: Path, tmp_path: Path) -> ManagedEnv:
    menv = ManagedEnv(flow_home, tmp_path / "wheels")
    menv.add_plugin("flow-plugin-good", command_plugin("good"))
    return menv


def entries(log: Path) -> list[object]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_wrappers_and_call_order_around_a_command(run_flow, menv, tmp_path):
    menv.add_plugin("flow-plugin-plain", LOG + '''
@hookimpl
def flow_before_command(context, command_name):
    _log(f"plain {context.plugin} {command_name}")
''')
    menv.add_plugin("flow-plugin-early", LOG + '''
@hookimpl(tryfirst=True)
def flow_before_command(context):
    _log(f"tryfirst {context.plugin}")
''')
    menv.add_plugin("flow-plugin-late", LOG + '''
@hookimpl(trylast=True)
def flow_before_command():
    _log("trylast")
''')
    menv.add_plugin("flow-plugin-wrap", LOG + '''
@hookimpl(wrapper=True)
def flow_before_command(context, command_name, args):
    _log(f"wrapper enters {context.plugin} {command_name} {args}")
    result = yield
    _log(f"wrapper leaves with {result!r}")
    return result
''')
    menv.add_plugin("flow-plugin-oldwrap", LOG + '''
@hookimpl(hookwrapper=True)
def flow_after_command(context, exit_code):
    _log(f"old-style wrapper enters {context.plugin}")
    outcome = yield
    _log(f"old-style wrapper leaves with {outcome.get_result()!r}, exit code {exit_code}")
''')
    # load order: plain, late, early, wrap, oldwrap, good
    menv.config(plugins=["flow-plugin-plain", "flow-plugin-late", "flow-plugin-early",
                         "flow-plugin-wrap", "flow-plugin-oldwrap", "flow-plugin-good"])
    log = tmp_path / "hooks.log"
    r = run_flow("good", "--help", env={"HOOK_LOG": str(log)})
    assert r.returncode == 0 and not log.exists()  # help triggers no hook, wrappers included
    r = run_flow("good", env={"HOOK_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.startswith("good: PluginContext plugin=flow-plugin-good")
    assert entries(log) == [
        "wrapper enters flow-plugin-wrap good []",
        "tryfirst flow-plugin-early",
        "plain flow-plugin-plain good",
        "trylast",
        "wrapper leaves with []",
        "old-style wrapper enters flow-plugin-oldwrap",
        "old-style wrapper leaves with [], exit code 0",
    ]


def test_a_broken_wrapper_is_reported_once_and_skipped(run_flow, menv, tmp_path):
    menv.add_plugin("flow-plugin-plain", LOG + '''
@hookimpl
def flow_before_command(command_name):
    _log(f"plain {command_name}")
''')
    menv.add_plugin("flow-plugin-badwrap", LOG + '''
@hookimpl(wrapper=True)
def flow_before_command():
    raise RuntimeError("wrapper broke")
    yield

@hookimpl
def flow_after_command():
    _log("the after hook of a failed plugin must not run")
''')
    menv.add_plugin("flow-plugin-badteardown", LOG + '''
@hookimpl(wrapper=True)
def flow_after_command(exit_code):
    result = yield
    _log(f"teardown sees exit code {exit_code}")
    raise ValueError("teardown broke")
''')
    menv.config(plugins=["flow-plugin-plain", "flow-plugin-badwrap", "flow-plugin-badteardown",
                         "flow-plugin-good"])
    log = tmp_path / "hooks.log"
    r = run_flow("good", env={"HOOK_LOG": str(log)})
    assert r.returncode == 0
    assert r.stdout.startswith("good: PluginContext")
    assert entries(log) == ["plain good", "teardown sees exit code 0"]
    assert r.stderr.splitlines() == [
        "flow: warning: plugin 'flow-plugin-badwrap' failed in flow_before_command: "
        "RuntimeError: wrapper broke. Remove it with: flow plugin delete flow-plugin-badwrap",
        "flow: warning: plugin 'flow-plugin-badteardown' failed in flow_after_command: "
        "ValueError: teardown broke. Remove it with: flow plugin delete "
        "flow-plugin-badteardown",
    ]


CALL_HOOKS = r'''
import json
from flowcore.cli.app import Flow
from flowcore.config import RunOptions
flow = Flow(RunOptions())
templates = flow.plugins.call("flow_create_templates", kit="flow-kit-demo")
print(json.dumps(templates))
'''


def test_a_wrapper_changes_what_the_other_plugins_answered(menv, flow_home, tmp_path):
    """A kit calling a hook gets the answers as the wrappers left them (pluggy's semantics)."""
    menv.add_plugin("flow-kit-demo", KIT_INFO + '''
@hookimpl
def flow_create_templates(kit):
    return [{"name": "kit-template", "description": "draft", "source": "/t/a", "kit": kit}]
''', group="flow.kits")
    menv.add_plugin("flow-plugin-lenient", '''
@hookimpl
def flow_create_templates(kit):
    return [{"name": "plugin-template", "description": "fine", "source": "/t/b", "kit": kit}]

@hookimpl(wrapper=True, specname="flow_create_templates")
def relabel_templates(kit, context):
    answers = yield
    return [[dict(t, description=f"relabelled by {context.plugin}") for t in a]
            for a in answers]
''')
    menv.config(kit="flow-kit-demo", plugins=["flow-plugin-lenient"])
    r = subprocess.run([sys.executable, "-c", CALL_HOOKS], capture_output=True, text=True,
                       env=offline_env(flow_home), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [
        [{"name": "kit-template", "description": "relabelled by flow-plugin-lenient",
          "source": "/t/a", "kit": "flow-kit-demo"}],
        [{"name": "plugin-template", "description": "relabelled by flow-plugin-lenient",
          "source": "/t/b", "kit": "flow-kit-demo"}],
    ]
