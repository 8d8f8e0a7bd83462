"""Issue 11, item 5: shell completion, JSON output of doctor and create --list, one version
format, and bare `flow` — through the real CLI (and, for completion, a real bash)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from managed_env import ManagedEnv
from offline import offline_env
from test_plugins_loading import KIT_INFO, command_plugin


@pytest.fixture
def menv(flow_home: Path, tmp_path: Path) -> ManagedEnv:
    return ManagedEnv(flow_home, tmp_path / "wheels")


def bash_complete(script: Path, flow_home: Path, tmp_path: Path, *words: str) -> list[str]:
    """Source ``script`` in a real bash, then ask the completion function that `complete -p
    flow` names for ``words`` (the last one being completed), as bash does on <TAB>."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "flow"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m flowcore "$@"\n')
    wrapper.chmod(0o755)
    words_literal = " ".join(f"'{w}'" for w in words)
    program = f'''
source {script}
spec=$(complete -p flow)
func=$(printf '%s\\n' "$spec" | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p')
COMP_WORDS=({words_literal})
COMP_CWORD={len(words) - 1}
COMPREPLY=()
"$func" flow "{words[-1]}" "{words[-2]}"
printf '%s\\n' "${{COMPREPLY[@]}}"
'''
    env = offline_env(flow_home, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_printed_bash_script_completes_commands(run_flow, menv, flow_home, tmp_path):
    menv.add_plugin("flow-kit-demo", command_plugin("build", KIT_INFO), group="flow.kits")
    menv.config(kit="flow-kit-demo")
    r = run_flow("completion", "bash")
    assert r.returncode == 0, r.stderr
    script = tmp_path / "flow.bash"
    script.write_text(r.stdout)
    assert sorted(bash_complete(script, flow_home, tmp_path, "flow", "bu")) == ["build",
                                                                               "buildkit"]
    assert bash_complete(script, flow_home, tmp_path, "flow", "plugin", "a") == ["add"]
    assert bash_complete(script, flow_home, tmp_path, "flow", "--no-ch") == ["--no-check-latest"]


def test_completion_scripts_for_zsh_and_fish_and_the_default_shell(run_flow):
    for shell, needle in (("zsh", "_FLOW_COMPLETE=zsh_complete"),
                          ("fish", "_FLOW_COMPLETE=fish_complete")):
        r = run_flow("completion", shell)
        assert r.returncode == 0 and needle in r.stdout, r.stderr
    r = run_flow("completion", env={"SHELL": "/usr/bin/fish"})
    assert "_FLOW_COMPLETE=fish_complete" in r.stdout
    r = run_flow("completion", env={"SHELL": "/bin/tcsh"})
    assert r.returncode == 2
    assert r.stderr.strip() == ("flow: error: no SHELL given, and $SHELL (tcsh) is not one of "
                                "bash, zsh, fish. Name it: flow completion bash|zsh|fish")


def test_bare_flow_prints_the_help_on_stdout(run_flow):
    r = run_flow()
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: flow [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in r.stdout and r.stderr == ""
    r = run_flow("plugin")
    assert r.returncode == 0 and r.stdout.startswith("Usage: flow plugin [OPTIONS] COMMAND")


def test_flow_and_the_server_print_their_version_the_same_way(run_flow):
    import os
    import subprocess
    import sys

    from flowcore._base.version import __version__
    from offline import REPO

    r = run_flow("--version")
    assert r.returncode == 0 and r.stdout == f"flow {__version__}\n"
    r = subprocess.run([sys.executable, "-m", "flow_kit_cloudbuild.server", "--version"], capture_output=True,
                       text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO / "kits" / "flow-kit-cloudbuild" / "src")})
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"flow-cloudbuild-server \d+\.\d+\.\d+\S*\n", r.stdout), r.stdout


def test_doctor_json(run_flow, flow_home, tmp_path):
    from packages_support import simple_plugin

    wheels = tmp_path / "dists"
    simple_plugin(wheels, "flow-plugin-general")
    r = run_flow("plugin", "add", "flow-plugin-general", "--no-index", "--find-links",
                 str(wheels))
    assert r.returncode == 0, r.stderr
    r = run_flow("doctor", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ok": True, "problems": []}
    shutil.rmtree(flow_home / "env")
    r = run_flow("doctor", "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["ok"] is False
    assert [(p["scope"], p["kind"], p["name"]) for p in out["problems"]] == [
        ("global", "missing", "flow-plugin-general")]
    assert set(out["problems"][0]) == {"scope", "kind", "name", "detail"}
    assert r.stderr.strip() == "flow: error: 1 problem found. Run: flow doctor --fix"
    r = run_flow("doctor", "--json", "--fix")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is True and out["remaining"] == [] and len(out["problems"]) == 1
    assert any("reinstalled flow-plugin-general" in line for line in out["fixed"])
    assert json.loads(run_flow("doctor", "--json", "--fix").stdout) == {
        "ok": True, "problems": [], "fixed": [], "remaining": []}


def test_create_list_json(run_flow, tmp_path):
    from create_support import PYTHON_KIT

    r = run_flow("buildkit", "add", str(PYTHON_KIT), "--no-index")
    assert r.returncode == 0, r.stderr
    r = run_flow("create", "--list", "--json", "-k", "flow-kit-python")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["kit"] == "flow-kit-python"
    names = [t["name"] for t in out["templates"]]
    assert "library" in names
    assert all(set(t) == {"name", "description", "origin"} for t in out["templates"])
    text = run_flow("create", "--list", "-k", "flow-kit-python").stdout
    assert [line.split()[0] for line in text.splitlines()] == names
    r = run_flow("create", "--json", "-k", "flow-kit-python")
    assert r.returncode == 2
    assert r.stderr.strip() == ("flow: error: --json is for the list of templates. Use it with "
                                "--list")
