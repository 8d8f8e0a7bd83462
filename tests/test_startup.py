"""Start-up stays small: what `flow --help` imports, the background update check, and the
hand-over to a project's own flowcore. (Timings are in benchmarks/, not here.)"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from managed_env import ManagedEnv, build_wheel, install, make_env
from offline import offline_env
from test_plugins_loading import KIT_INFO, command_plugin

PROBE = r'''
import json, sys
sys.argv = ["flow", *json.loads(sys.argv[1])]
from flowcore.cli.main import main
try:
    main()
except SystemExit:
    pass
sys.stdout.flush()
print("\nMODULES=" + json.dumps(sorted(sys.modules)), file=sys.stderr)
'''

HEAVY = ("questionary", "socketio", "copier", "pluggy", "importlib.metadata", "tomlkit", "uv",
         "packaging", "flowcore.plugins.system", "flowcore.plugins.hookspecs")
# pathlib, copy (dataclasses), shutil (click's help formatter) are allowed on the start-up path
# since issue 21: avoiding them cost more clarity than their few milliseconds (the cost ledger
# in benchmarks/README.md; bench_startup.py holds the start-up budget).


def modules_after(flow_home: Path, cwd: Path, *args: str) -> tuple[set[str], str]:
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(args))], cwd=cwd,
                       env=offline_env(flow_home), capture_output=True, text=True)
    err, _, mods = r.stderr.rpartition("MODULES=")
    return set(json.loads(mods)), r.stdout


@pytest.fixture
def installed(flow_home: Path, tmp_path: Path) -> ManagedEnv:
    menv = ManagedEnv(flow_home, tmp_path / "wheels")
    menv.add_plugin("flow-kit-demo", command_plugin("build", KIT_INFO), group="flow.kits")
    menv.add_plugin("flow-plugin-one", "import questionary  # heavy, imported on purpose\n"
                    + command_plugin("one"))
    menv.add_plugin("flow-plugin-two", command_plugin("two"))
    menv.config(kit="flow-kit-demo", plugins=["flow-plugin-one", "flow-plugin-two"])
    return menv


def test_help_imports_no_plugin_and_nothing_heavy(installed, flow_home, tmp_path):
    modules_after(flow_home, tmp_path, "--help")  # first run builds the manifest
    modules, out = modules_after(flow_home, tmp_path, "--help")
    assert "one" in out and "build" in out  # the listing is complete...
    loaded = {m for m in modules if m.split(".")[0] in
              ("questionary", "socketio", "copier", "flow_kit_demo", "flow_plugin_one",
               "flow_plugin_two")}
    assert loaded == set()  # ...without importing any plugin
    assert not {m for m in HEAVY if m in modules}


def test_a_plugin_command_imports_only_its_own_plugin(installed, flow_home, tmp_path):
    modules_after(flow_home, tmp_path, "--help")
    modules, out = modules_after(flow_home, tmp_path, "two", "--help")
    assert "Run two." in out
    assert "flow_plugin_two" in modules
    assert not {"flow_plugin_one", "flow_kit_demo", "questionary"} & modules
    modules, out = modules_after(flow_home, tmp_path, "two")
    assert out.startswith("two: PluginContext")
    assert not {"flow_plugin_one", "flow_kit_demo", "questionary", "importlib.metadata"} & modules


def test_the_root_help_is_as_wide_as_click_makes_it(installed, flow_home, tmp_path):
    env = offline_env(flow_home)
    for columns in ("40", "90", "300"):
        r = subprocess.run([sys.executable, "-m", "flowcore", "--help"], cwd=tmp_path,
                           env={**env, "COLUMNS": columns}, capture_output=True, text=True)
        widest = max(len(line) for line in r.stdout.splitlines())
        assert widest <= max(min(int(columns), 100) - 2, 50)
        assert widest >= min(max(min(int(columns), 100) - 2, 50), 70) - 10


# ---------------------------------------------------------------------------------------------
# update check
# ---------------------------------------------------------------------------------------------


def run_in_terminal(flow_home: Path, cwd: Path, *args: str, **env: str) -> int:
    """Run flow with stdout on a pseudo-terminal (so it believes a human is watching)."""
    master, slave = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "flowcore", *args], cwd=cwd, stdout=slave,
                           stderr=slave, stdin=subprocess.DEVNULL,
                           env={k: v for k, v in offline_env(flow_home, **env).items()
                                if not (k == "CI" and "CI" not in env)})
    finally:
        os.close(slave)
        os.close(master)
    return r.returncode


def last_update(flow_home: Path) -> int:
    try:
        return json.loads((flow_home / "config.json").read_text()).get("lastUpdateDate", 0)
    except FileNotFoundError:
        return 0


def test_update_check_runs_in_the_background_only_when_it_should(tmp_path):
    homes = {name: tmp_path / name for name in ("ci", "no_tty", "opted_out", "due", "recent")}
    for home in homes.values():
        home.mkdir()
        (home / "config.json").write_text('{"schemaVersion": 1}')
    recent = int(time.time() * 1000) - 60_000
    (homes["recent"] / "config.json").write_text(json.dumps({"lastUpdateDate": recent}))

    assert run_in_terminal(homes["ci"], tmp_path, "config", CI="true") == 0
    assert run_in_terminal(homes["opted_out"], tmp_path, "--no-check-latest", "config") == 0
    assert run_in_terminal(homes["recent"], tmp_path, "config") == 0
    r = subprocess.run([sys.executable, "-m", "flowcore", "config"], capture_output=True,
                       env={k: v for k, v in offline_env(homes["no_tty"]).items() if k != "CI"})
    assert r.returncode == 0
    assert run_in_terminal(homes["due"], tmp_path, "config") == 0
    # the due check happens in the background: wait for its first write (offline, it records
    # the attempt and stays silent)
    deadline = time.time() + 60
    while last_update(homes["due"]) == 0 and time.time() < deadline:
        time.sleep(0.1)
    assert last_update(homes["due"]) > 0
    # the others, started earlier, would have written by now if they had started a check
    assert last_update(homes["ci"]) == 0
    assert last_update(homes["no_tty"]) == 0
    assert last_update(homes["opted_out"]) == 0
    assert last_update(homes["recent"]) == recent


def test_a_newer_version_found_earlier_is_announced(tmp_path):
    import flowcore

    home = tmp_path / "home"
    home.mkdir()
    now = int(time.time() * 1000)
    (home / "config.json").write_text(json.dumps({"lastUpdateDate": now,
                                                  "latestVersion": "99.0"}))
    master, slave = pty.openpty()
    env = {k: v for k, v in offline_env(home).items() if k != "CI"}
    in_terminal = subprocess.run([sys.executable, "-m", "flowcore", "config"], cwd=tmp_path,
                                 stdout=slave, stderr=subprocess.PIPE, text=True, env=env,
                                 check=True)
    os.close(slave)
    out = os.read(master, 65536).decode()
    os.close(master)
    assert in_terminal.stderr.strip() == (
        f"flow: notice: flowcore 99.0 is available (this is {flowcore.__version__}). Upgrade with: "
        "pip install -U flowcore")
    r = subprocess.run([sys.executable, "-m", "flowcore", "config"], cwd=tmp_path,
                       capture_output=True, text=True, env=env)
    assert "flowcore 99.0 is available" not in r.stderr  # not a terminal: nothing printed
    assert "activeBuildKit" in out


# ---------------------------------------------------------------------------------------------
# local version first
# ---------------------------------------------------------------------------------------------

FAKE_MAIN = '''
import os, sys
print("LOCAL FLOWCORE 9.9.9", sys.argv[1:], "FLOW_NO_LOCAL=" + os.environ.get("FLOW_NO_LOCAL", ""))
'''


@pytest.fixture
def project_with_local_flowcore(tmp_path: Path) -> Path:
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "flow.toml").write_text("[tool.flow]\n")
    env_dir = make_env(project / ".flow" / "env", visible=False)
    wheel = build_wheel(tmp_path / "w", "flowcore", {"flowcore/__init__.py": "",
                                                     "flowcore/__main__.py": FAKE_MAIN},
                        version="9.9.9", requires=())
    install(env_dir, wheel)
    return project


def test_global_flow_hands_over_to_the_projects_own_flowcore(
        run_flow, project_with_local_flowcore):
    r = run_flow("config", "--json", cwd=project_with_local_flowcore / "src")
    assert "LOCAL FLOWCORE" not in r.stdout and "is not trusted" in r.stderr  # not yet trusted
    assert run_flow("trust", cwd=project_with_local_flowcore).returncode == 0
    r = run_flow("--debug", "config", "--json", cwd=project_with_local_flowcore / "src")
    assert r.returncode == 0
    assert r.stdout.strip() == ("LOCAL FLOWCORE 9.9.9 ['--debug', 'config', '--json'] "
                                "FLOW_NO_LOCAL=1")
    env_dir = project_with_local_flowcore / ".flow" / "env"
    assert r.stderr.startswith(f"flow: using flowcore 9.9.9 from {env_dir}\n")
    assert "flow: debug: this is flowcore " in r.stderr

    r = run_flow("config", "--json", cwd=project_with_local_flowcore,
                 env={"FLOW_NO_LOCAL": "1"})
    assert r.returncode == 0
    assert "LOCAL FLOWCORE" not in r.stdout
    assert json.loads(r.stdout)["projectRoot"]["value"] == str(project_with_local_flowcore)


def test_same_version_in_the_project_runs_in_process(run_flow, tmp_path):
    import flowcore

    project = tmp_path / "proj"
    project.mkdir()
    (project / "flow.toml").write_text("[tool.flow]\n")
    env_dir = make_env(project / ".flow" / "env", visible=False)
    install(env_dir, build_wheel(tmp_path / "w", "flowcore", {"flowcore/__main__.py": FAKE_MAIN},
                                 version=flowcore.__version__, requires=()))
    r = run_flow("config", "--json", cwd=project)
    assert r.returncode == 0 and "LOCAL FLOWCORE" not in r.stdout
