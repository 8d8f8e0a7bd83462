"""Workspace trust: what a cloned repository commits runs nothing until the user trusts it.

Each attack of issue 24 is a test here, through the real CLI: a ``.pth`` file and a plugin
committed in the repository's ``.flow/env``, its ``[tool.flow] plugins`` and ``index-url``, the
question asked once on a real terminal (a pty), and config files that break parsers. Every
attack test also shows the other side (after ``flow trust`` the same thing does run), so that it
could not pass by testing nothing.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowcore.config.environment import site_packages_dir
from offline import FLOW, offline_env
from package_index import INDEX_ENV

PLUGIN_MODULE = """import pathlib, click
from flowcore.api import hookimpl
pathlib.Path({marker!r}).write_text("imported")

@click.command()
def planted():
    \"\"\"A command the repository planted.\"\"\"
    click.echo("planted ran")

@hookimpl
def flow_register_commands(registry, context):
    registry.add(planted)
"""


def committed_env(root: Path, marker_dir: Path, *, real_python: bool) -> Path:
    """A repository's committed ``.flow/env``: a ``.pth`` file and a plugin, each of which
    writes a marker file when Python runs it; a real interpreter when ``real_python``."""
    env = root / ".flow" / "env"
    if real_python:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    sp = site_packages_dir(env)
    sp.mkdir(parents=True, exist_ok=True)
    (sp / "evil.pth").write_text(
        f"import pathlib; pathlib.Path({str(marker_dir / 'pth-ran')!r}).write_text('x')\n")
    (sp / "flow_plugin_planted.py").write_text(
        PLUGIN_MODULE.format(marker=str(marker_dir / "plugin-imported")))
    info = sp / "flow_plugin_planted-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flow-plugin-planted\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[flow.plugins]\nplanted = flow_plugin_planted\n")
    (info / "RECORD").write_text("flow_plugin_planted.py,,\n")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "cloned"\nversion = "1"\n\n[tool.flow]\nplugins = ["flow-plugin-planted"]\n')
    return root


@pytest.fixture
def cloned(tmp_path: Path) -> tuple[Path, Path]:
    markers = tmp_path / "markers"
    markers.mkdir()
    return committed_env(tmp_path / "cloned", markers, real_python=True), markers


@pytest.mark.parametrize("args", [["--help"], ["config"], ["plugin", "list"], ["planted"]])
def test_untrusted_project_runs_no_pth_and_no_plugin(run_flow, cloned, args) -> None:
    root, markers = cloned
    r = run_flow(*args, cwd=root)
    assert not (markers / "pth-ran").exists()
    assert not (markers / "plugin-imported").exists()
    assert "A command the repository planted" not in r.stdout
    assert "plugin: flow-plugin-planted" not in r.stdout
    lines = [line for line in r.stderr.splitlines() if "not trusted" in line]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("flow: project . is not trusted: not using its .flow/env; "
                               "plugins flow-plugin-planted")
    assert lines[0].endswith("run 'flow trust' (or 'flow -g ...' to ignore the project).")


def test_after_flow_trust_the_project_env_and_plugins_are_used(run_flow, cloned) -> None:
    root, markers = cloned
    r = run_flow("trust", cwd=root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"Trusted {os.path.realpath(root)}: flow now uses its .flow/env; "
                               "plugins flow-plugin-planted")
    r = run_flow("planted", cwd=root)
    assert (r.returncode, r.stdout) == (0, "planted ran\n"), r.stderr
    assert (markers / "pth-ran").exists() and (markers / "plugin-imported").exists()
    assert "not trusted" not in r.stderr


def test_global_scope_ignores_the_project_without_a_note(run_flow, cloned) -> None:
    root, markers = cloned
    r = run_flow("-g", "--help", cwd=root)
    assert r.returncode == 0
    assert "not trusted" not in r.stderr
    assert not (markers / "pth-ran").exists() and not (markers / "plugin-imported").exists()


def test_a_project_that_asks_for_nothing_needs_no_trust(run_flow, tmp_path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    (root / "flow.toml").write_text('[tool.flow]\nbuildkit = "flow-kit-python"\n')
    r = run_flow("config", cwd=root)
    assert "trust" not in r.stderr


def test_a_project_index_is_not_used_until_trusted_and_is_named(run_flow, flow_home, tmp_path,
                                                                package_index) -> None:
    root = tmp_path / "cloned"
    root.mkdir()
    (root / "flow.toml").write_text(f'[tool.flow]\nindex-url = "{package_index.url}"\n')
    r = run_flow("plugin", "add", "flow-plugin-env", cwd=root, env=INDEX_ENV)
    assert r.returncode == 2
    # The run's note (the command hooks load plugins first), then the error.
    assert r.stderr.splitlines() == [
        "flow: project . is not trusted: not using package source index-url. Review them, then "
        "run 'flow trust' (or 'flow -g ...' to ignore the project).",
        f"flow: error: cannot install plugins into it: project {root} is not trusted. Review its "
        "[tool.flow] and .flow/env, then run 'flow trust' (or use -g)"]
    assert not (root / ".flow").exists()
    assert (root / "flow.toml").read_text().count("plugins") == 0

    assert run_flow("trust", cwd=root).returncode == 0
    r = run_flow("plugin", "add", "flow-plugin-env", cwd=root, env=INDEX_ENV)
    assert r.returncode == 0, r.stderr
    assert f"flow: indexUrl {package_index.url} (from {root / 'flow.toml'})" in r.stderr
    assert f"installed plugin flow-plugin-env 0.1.0 into project {root}" in r.stdout
    # flow's own edit of the config keeps the project trusted: no note on the next run.
    r = run_flow("plugin", "list", cwd=root)
    assert "not trusted" not in r.stderr and "flow-plugin-env" in r.stdout


def test_a_project_env_created_by_flow_needs_no_extra_step(run_flow, flow_home, tmp_path,
                                                           wheelhouse) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "flow.toml").write_text('[tool.flow]\nbuildkit = "flow-kit-python"\n')
    r = run_flow("plugin", "add", "flow-plugin-env", "--no-index", "--find-links", str(wheelhouse),
                 cwd=root)
    assert r.returncode == 0, r.stderr
    assert (root / ".flow" / "env").is_dir()
    r = run_flow("env", cwd=root)  # the project plugin's command, from the project env
    assert r.returncode == 0, r.stderr
    assert "not trusted" not in r.stderr
    listed = json.loads((flow_home / "trust.json").read_text())["projects"]
    assert listed[os.path.realpath(root)]["state"] == "trusted"


def _pty_run(args: list[str], cwd: Path, env: dict[str, str], answer: str | None) -> str:
    """Run flow on a real terminal; type ``answer`` at its question. Returns what it showed."""
    main, child = pty.openpty()
    proc = subprocess.Popen([*FLOW, *args], cwd=cwd, env=env, stdin=child, stdout=child,
                            stderr=child, close_fds=True)
    os.close(child)
    out = b""
    sent = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if answer is not None and not sent and b"[y/N]" in out:
            os.write(main, answer.encode() + b"\r")
            sent = True
        if proc.poll() is not None and not ready:
            break
    proc.wait(timeout=30)
    os.close(main)
    return out.decode("utf-8", "replace")


def test_on_a_terminal_flow_asks_once(flow_home, cloned) -> None:
    root, markers = cloned
    env = {k: v for k, v in offline_env(flow_home).items() if k != "CI"}
    shown = _pty_run(["plugin", "list"], root, env, answer="n")
    assert "trust this project and run what it asks for? [y/N]" in shown
    assert not (markers / "plugin-imported").exists()
    shown = _pty_run(["plugin", "list"], root, env, answer=None)  # declined: not asked again
    assert "[y/N]" not in shown and "you declined to trust it" in shown
    # A change (a git pull) asks again; yes runs it.
    with (root / "pyproject.toml").open("a") as f:
        f.write("# pulled\n")
    shown = _pty_run(["planted"], root, env, answer="y")
    assert "[y/N]" in shown and "planted ran" in shown
    assert (markers / "plugin-imported").exists()


@pytest.mark.parametrize("text, needle", [
    ('{"a":' * 100_000 + "1" + "}" * 100_000, "it nests objects or arrays too deeply"),
    ('{"lastUpdateDate": ' + "9" * 5000 + "}", "it holds a number too large to read"),
    ('{"plugins": ["\\ud800"]}', "it holds a string that is not valid Unicode"),
    ('{"x": ' + "[" * 40 + "]" * 40 + "}", "it nests objects or arrays more than 32 levels deep"),
])
def test_config_json_that_breaks_parsers_is_one_line_exit_2(run_flow, flow_home, text,
                                                           needle) -> None:
    flow_home.mkdir(parents=True)
    (flow_home / "config.json").write_text(text)
    before = (flow_home / "config.json").read_bytes()
    r = run_flow("config")
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith(f"flow: error: {flow_home / 'config.json'} ")
    assert needle in r.stderr
    help_ = run_flow("--help")
    assert help_.returncode == 0 and "Commands" in help_.stdout
    assert (flow_home / "config.json").read_bytes() == before


@pytest.mark.parametrize("text, needle", [
    ("a = " + "[" * 100_000 + "]" * 100_000, "it nests objects or arrays too deeply"),
    ("a = " + "9" * 5000, "it holds a number too large to read"),
])
def test_project_toml_that_breaks_parsers_is_one_line_exit_2(run_flow, tmp_path, text,
                                                            needle) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "flow.toml").write_text(text + "\n[tool.flow]\n")
    r = run_flow("config", cwd=root)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.splitlines()) == 1 and needle in r.stderr
    assert str(root / "flow.toml") in r.stderr
