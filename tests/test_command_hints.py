"""Issue 11, "every documented command works as written": what flow says about a name it does
not know (a typo, a command of another scope, a broken plugin's command, a misspelt key or
kit), and global options given after the sub-command. All through the real `flow` CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from managed_env import ManagedEnv
from test_plugins_loading import KIT_INFO, command_plugin


@pytest.fixture
def menv(flow_home: Path, tmp_path: Path) -> ManagedEnv:
    return ManagedEnv(flow_home, tmp_path / "wheels")


@pytest.fixture
def two_kits(menv: ManagedEnv) -> ManagedEnv:
    """flow-kit-demo (build) active; flow-kit-other (serve) installed, with a plugin bound to it
    (clean); a general plugin (gen)."""
    menv.add_plugin("flow-kit-demo", command_plugin("build", KIT_INFO), group="flow.kits")
    menv.add_plugin("flow-kit-other", command_plugin("serve"), group="flow.kits")
    menv.add_plugin("flow-plugin-clean", command_plugin("clean"), kits=["flow-kit-other"])
    menv.add_plugin("flow-plugin-gen", command_plugin("gen"))
    (menv.flow_home / "config.json").write_text(json.dumps({
        "schemaVersion": 1, "activeBuildKit": "flow-kit-demo",
        "buildKits": [{"name": "flow-kit-demo", "installed": True, "plugins": []},
                      {"name": "flow-kit-other", "installed": True,
                       "plugins": ["flow-plugin-clean"]}],
        "plugins": ["flow-plugin-gen"]}))
    return menv


#: What an install hint says when nothing records where a kit or plugin came from.
ANY_SOURCE = "PATH-OR-NAME (a directory, a wheel, or a name from your configured index)"


def error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


# -- 1. typos --------------------------------------------------------------------------------


def test_an_unknown_command_gets_a_did_you_mean_over_every_command_here(run_flow, two_kits):
    r = run_flow("buld")
    assert r.returncode == 2
    assert error_line(r) == ("flow: error: no such command 'buld'. Did you mean 'build'? See "
                             "'flow --help' for the commands there are")
    r = run_flow("gne")  # a general plugin's command
    assert "Did you mean 'gen'?" in error_line(r)
    r = run_flow("confg")  # a built-in
    assert "Did you mean 'config'?" in error_line(r)
    r = run_flow("zzzzzz")
    assert error_line(r) == ("flow: error: no such command 'zzzzzz'. See 'flow --help' for the "
                             "commands there are")


def test_a_typo_without_any_kit_still_gets_a_did_you_mean(run_flow):
    r = run_flow("confg")
    assert r.returncode == 2
    assert error_line(r) == ("flow: error: no such command 'confg'. Did you mean 'config'? See "
                             "'flow --help' for the commands there are")


def test_a_sub_command_typo_reads_as_one_sentence(run_flow):
    r = run_flow("buildkit", "lst")
    assert r.returncode == 2
    assert error_line(r) == ("flow: error: No such command 'lst'. Did you mean 'list'? "
                             "See 'flow buildkit --help'.")


def test_a_command_of_an_installed_but_inactive_kit_says_how_to_run_it(run_flow, two_kits):
    r = run_flow("serve")
    assert r.returncode == 2
    assert error_line(r) == (
        "flow: error: no such command 'serve' with build kit flow-kit-demo: build kit "
        "flow-kit-other provides it. Run it with: flow -k flow-kit-other serve, or make "
        "flow-kit-other the active kit: flow buildkit switch flow-kit-other")
    r = run_flow("-k", "flow-kit-other", "serve")
    assert r.returncode == 0 and r.stdout.startswith("serve: KitPluginContext"), r.stderr


def test_a_command_of_a_plugin_bound_to_another_kit_says_how_to_run_it(run_flow, two_kits):
    r = run_flow("clean")
    assert r.returncode == 2
    assert error_line(r) == (
        "flow: error: no such command 'clean' with build kit flow-kit-demo: plugin "
        "flow-plugin-clean provides it, bound to build kit flow-kit-other. Run it with: "
        "flow -k flow-kit-other clean, or make flow-kit-other the active kit: "
        "flow buildkit switch flow-kit-other")
    assert run_flow("-k", "flow-kit-other", "clean").returncode == 0


def test_a_kit_bound_command_in_a_project_says_to_add_the_plugin_there(run_flow, two_kits,
                                                                       tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "flow.toml").write_text('[tool.flow]\nbuildkit = "flow-kit-demo"\n')
    r = run_flow("clean", cwd=project)
    assert r.returncode == 2
    assert error_line(r) == (
        f"flow: error: no such command 'clean' in project {project} (build kit flow-kit-demo): "
        "plugin flow-plugin-clean provides it, bound to build kit flow-kit-other. A project "
        "loads only its own plugins: add it to this one with: flow plugin add "
        f"{ANY_SOURCE} (it is made for build kit flow-kit-other), or run it outside the "
        "project: flow -g -k flow-kit-other clean")
    # the other kit's own command, from inside the project
    r = run_flow("serve", cwd=project)
    assert "make flow-kit-other this project's kit: flow buildkit switch flow-kit-other" in \
        error_line(r)


def test_a_misspelt_kit_name_suggests_the_installed_one(run_flow, two_kits, flow_home):
    before = (flow_home / "config.json").read_text()
    r = run_flow("buildkit", "switch", "flow-kit-dmeo")
    assert r.returncode == 2
    assert error_line(r) == (
        "flow: error: build kit 'flow-kit-dmeo' is not installed. Did you mean "
        "'flow-kit-demo'? Use it with: flow buildkit switch flow-kit-demo (installed build "
        "kits: flow-kit-demo, flow-kit-other)")
    assert (flow_home / "config.json").read_text() == before
    r = run_flow("-k", "flow-kit-dmeo", "build")
    assert r.returncode == 2
    assert error_line(r) == (
        "flow: error: build kit 'flow-kit-dmeo' (from command line (-k/--build-kit)) is not "
        "installed. Did you mean 'flow-kit-demo'? (installed build kits: flow-kit-demo, "
        "flow-kit-other)")
    # a name close to nothing installed still names the add command
    r = run_flow("-k", "flow-kit-zzz", "build")
    assert error_line(r).endswith(f"Install it with: flow buildkit add {ANY_SOURCE}")


def test_unknown_config_keys_are_warned_about_with_the_nearest_known_key(run_flow, two_kits,
                                                                         flow_home, tmp_path):
    data = json.loads((flow_home / "config.json").read_text())
    data["buildKits"][0]["instaled"] = True
    data["activeBuildkit"] = "x"
    data["myOwnKey"] = 1  # the top level is shared with users and plugins: no warning
    (flow_home / "config.json").write_text(json.dumps(data))
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[tool.flow]\nbuildkt = "flow-kit-demo"\n\n[tool.flow.demo]\nx = 1\n\n'
        '[tool.flow.othr]\ny = 2\n\n[tool.flow.somebody-elses]\nz = 3\n')
    r = run_flow("config", cwd=project)
    assert r.returncode == 0, r.stderr
    cfg = flow_home / "config.json"
    assert sorted(r.stderr.strip().splitlines()) == sorted([
        f"flow: warning: unknown key 'activeBuildkit' in {cfg}, ignored. Did you mean "
        "'activeBuildKit'?",
        f"flow: warning: unknown key 'instaled' in {cfg} (buildKits[0]), ignored. Did you mean "
        "'installed'?",
        f"flow: warning: unknown key 'buildkt' in [tool.flow] of {project / 'pyproject.toml'}, "
        "ignored. Did you mean 'buildkit'?",
        f"flow: warning: unknown key 'othr' in [tool.flow] of {project / 'pyproject.toml'}, "
        "ignored. Did you mean 'other'?",
    ])


def test_a_create_answer_the_template_does_not_ask_is_warned_about(run_flow, tmp_path):
    from create_support import PYTHON_KIT

    work = tmp_path / "work"
    work.mkdir()
    r = run_flow("buildkit", "add", str(PYTHON_KIT), "--no-index", cwd=work)
    assert r.returncode == 0, r.stderr
    r = run_flow("create", "demo", "-k", "flow-kit-python", "-t", "library", "--defaults",
                 "-d", "autor=Bob", cwd=work)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == (
        "flow: warning: template library (flow-kit-python) does not ask 'autor' (from --data "
        "autor=...). Did you mean 'author'?")


# -- 2. a plugin that breaks after install ---------------------------------------------------


def site_packages(env_dir: Path) -> Path:
    from flowcore.config.environment import site_packages_dir

    return site_packages_dir(env_dir)


BROKEN_FIX = ("See what is wrong with: flow doctor; reinstall it (flow doctor --fix, or flow "
              "plugin add PATH-OR-NAME: a directory, a wheel, or a name from your configured "
              "index), or remove it: flow plugin delete flow-plugin-breaks")


def test_a_plugin_that_breaks_after_install_keeps_its_command_and_names_the_fix(run_flow, menv):
    menv.add_plugin("flow-plugin-breaks", command_plugin("broken-cmd"))
    menv.config(plugins=["flow-plugin-breaks"])
    assert run_flow("broken-cmd").returncode == 0
    module = site_packages(menv.dir) / "flow_plugin_breaks" / "__init__.py"
    module.write_text("raise RuntimeError('boom')\n" + module.read_text())
    r = run_flow("--help")
    assert r.returncode == 0
    assert r.stderr.strip() == (
        "flow: warning: plugin 'flow-plugin-breaks' failed to load: RuntimeError: boom. "
        "Remove it with: flow plugin delete flow-plugin-breaks")
    assert re.search(r"\n  broken-cmd +\(unavailable: it failed to load; see 'flow broken-cmd'\)"
                     r"  \[flow-plugin-breaks\]\n", r.stdout)
    for _ in range(2):  # from the rebuilt manifest, and again from the cached one
        r = run_flow("broken-cmd")
        assert r.returncode == 1
        assert error_line(r) == (
            "flow: error: command 'broken-cmd' cannot run: its plugin 'flow-plugin-breaks' "
            f"failed to load: RuntimeError: boom. {BROKEN_FIX}")


def test_a_plugin_that_fails_only_when_its_command_runs_names_the_fix(run_flow, menv):
    menv.add_plugin("flow-plugin-breaks", "import os\nif os.environ.get('BREAK'):\n"
                    "    raise RuntimeError('boom')\n" + command_plugin("broken-cmd"))
    menv.config(plugins=["flow-plugin-breaks"])
    assert run_flow("--help").returncode == 0  # the manifest knows its command
    r = run_flow("broken-cmd", env={"BREAK": "1"})
    assert r.returncode == 1
    assert error_line(r) == (
        "flow: error: command 'broken-cmd' cannot run: its plugin 'flow-plugin-breaks' failed "
        f"to load: RuntimeError: boom. {BROKEN_FIX}")


def test_a_plugin_broken_before_its_commands_were_known_is_named(run_flow, menv):
    menv.add_plugin("flow-plugin-breaks", "raise RuntimeError('boom')\n")
    menv.config(plugins=["flow-plugin-breaks"])
    r = run_flow("broken-cmd")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "flow: error: no such command 'broken-cmd' ('flow-plugin-breaks' failed to load, so its "
        "commands are not known; see 'flow doctor'). See 'flow --help' for the commands there "
        "are")


# -- 3. scope surprises ------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "flow.toml").write_text('[tool.flow]\nbuildkit = "flow-kit-demo"\n')
    return root


def test_deleting_a_global_plugin_inside_a_project_names_the_global_delete(run_flow, two_kits,
                                                                           project, flow_home):
    r = run_flow("plugin", "list", "--json", cwd=project)
    assert {"name": "flow-plugin-gen", "kind": "general", "version": "0.1.0"} in \
        json.loads(r.stdout)["plugins"]
    before = (flow_home / "config.json").read_bytes()
    r = run_flow("plugin", "delete", "flow-plugin-gen", cwd=project)
    assert r.returncode == 1
    assert error_line(r) == (
        f"flow: error: plugin 'flow-plugin-gen' is not a plugin of project {project}: it is "
        "installed globally (plugin list shows the global general plugins here too). Delete it "
        "from the global scope: flow -g plugin delete flow-plugin-gen")
    assert (flow_home / "config.json").read_bytes() == before


def test_global_options_may_follow_the_command(run_flow, two_kits, project, tmp_path):
    for args in (["-g", "plugin", "list", "--json"], ["plugin", "list", "-g", "--json"],
                 ["plugin", "list", "--json", "--global"]):
        r = run_flow(*args, cwd=project)
        assert r.returncode == 0, (args, r.stderr)
        assert json.loads(r.stdout)["scope"] == "global"
    # -k after a kit's command that this scope does not have: looked up with that kit
    r = run_flow("serve", "-k", "flow-kit-other")
    assert r.returncode == 0 and r.stdout.startswith("serve: KitPluginContext"), r.stderr
    r = run_flow("serve", "--build-kit=flow-kit-other")
    assert r.returncode == 0, r.stderr
    # --root after the command
    r = run_flow("config", "--json", "--root", str(project))
    assert json.loads(r.stdout)["projectRoot"]["value"] == str(project)
    # after '--' nothing is moved
    r = run_flow("config", "get", "--", "-g")
    assert "'-g' is not set" in error_line(r)


def test_a_commands_own_option_of_the_same_name_wins_after_it(run_flow, menv, tmp_path):
    menv.add_plugin("flow-plugin-own", '''
@click.command("own")
@click.option("--config", "config_file")
@click.option("-k", "keep", is_flag=True)
def own(config_file, keep):
    """Own options."""
    click.echo(f"config={config_file} keep={keep}")

@hookimpl
def flow_register_commands(registry):
    registry.add(own)
''')
    menv.config(plugins=["flow-plugin-own"])
    r = run_flow("own", "--config", "server.toml", "-k")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "config=server.toml keep=True"
    r = run_flow("own", "-g", "--config=x.toml")  # -g is not its own: it is flow's
    assert r.stdout.strip() == "config=x.toml keep=False", r.stderr


# -- issue 22: checked suggestions, and hints that install from the recorded source --------------

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def real_kits(run_flow) -> None:
    r = run_flow("buildkit", "add", str(REPO / "kits" / "flow-kit-cloudbuild"),
                 str(REPO / "kits" / "flow-kit-python"), "--no-index")
    assert r.returncode == 0, r.stderr


def test_a_kit_that_does_not_take_the_project_is_not_suggested(run_flow, real_kits, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "package.json").write_text('{"name": "site", "version": "1.0.0"}\n')
    assert run_flow("init", "-k", "flow-kit-cloudbuild", cwd=site).returncode == 0
    r = run_flow("build", cwd=site)
    assert r.returncode == 2
    line = error_line(r)
    assert "flow -k flow-kit-python" not in line and "buildkit switch" not in line
    assert line == (
        f"flow: error: no such command 'build' in project {site} (build kit "
        "flow-kit-cloudbuild; build kit flow-kit-python has it, but takes only a folder with "
        "pyproject.toml, setup.py or setup.cfg). Did you mean 'buildkit'? See 'flow --help' "
        "for the commands there are")


def test_a_kit_that_takes_the_project_is_still_suggested(run_flow, real_kits, tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "pyproject.toml").write_text('[project]\nname = "pkg"\nversion = "1.0"\n')
    assert run_flow("init", "-k", "flow-kit-cloudbuild", cwd=package).returncode == 0
    r = run_flow("build", cwd=package)
    assert r.returncode == 2
    assert "Run it with: flow -k flow-kit-python build" in error_line(r)


def test_a_broken_plugins_fix_reinstalls_it_from_its_recorded_source(run_flow, tmp_path):
    from wheelfactory import plugin_wheel

    work = tmp_path / "work"
    wheel = plugin_wheel(work / "wheels", "flow-plugin-breaks", command_plugin("broken-cmd"))
    rel = f"./wheels/{wheel.name}"
    r = run_flow("plugin", "add", rel, "--no-index", cwd=work)
    assert r.returncode == 0, r.stderr
    from flowcore.config.environment import site_packages_dir

    module = site_packages_dir(tmp_path / "flowhome" / "env") / "flow_plugin_breaks" / "__init__.py"
    module.write_text("raise RuntimeError('boom')\n" + module.read_text())
    r = run_flow("broken-cmd", cwd=work)
    assert r.returncode == 1
    assert error_line(r).endswith(
        f"reinstall it (flow plugin add {rel} --no-index, or flow doctor --fix), or remove it: "
        "flow plugin delete flow-plugin-breaks")
    # from a folder the wheel is not under: its absolute path
    (tmp_path / "other").mkdir()
    r = run_flow("broken-cmd", cwd=tmp_path / "other")
    assert f"flow plugin add {wheel} --no-index," in error_line(r)


def test_a_kit_bound_plugins_hint_names_its_recorded_source(run_flow, two_kits, project,
                                                              flow_home):
    source = project / "vendor" / "flow-plugin-clean"
    source.mkdir(parents=True)
    (flow_home / "installed.json").write_text(json.dumps({"schemaVersion": 1, "packages": {
        "flow-plugin-clean": {"kind": "plugin", "version": "0.1.0", "source": str(source),
                              "findLinks": [], "noIndex": False}}}))
    r = run_flow("clean", cwd=project)
    assert "add it to this one with: flow plugin add ./vendor/flow-plugin-clean (it is made " \
        "for build kit flow-kit-other)" in error_line(r)


def test_install_hints_never_name_a_package_no_index_has(run_flow, two_kits, tmp_path):
    r = run_flow("-k", "flow-kit-zzz", "build")
    assert error_line(r).endswith(f"Install it with: flow buildkit add {ANY_SOURCE}")
    r = run_flow("create", "-k", "flow-kit-zzz", "x", cwd=tmp_path)
    assert error_line(r).endswith(f"Install it with: flow buildkit add {ANY_SOURCE}")
