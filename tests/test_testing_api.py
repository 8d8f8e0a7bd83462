"""flowcore.testing, the public testing API for kit and plugin authors, and its pytest plugin.

The fixtures are tested as an author gets them: pytester runs a pytest session in a subprocess
of its own folder, where the ``pytest11`` entry point of the installed flowcore provides them
(nothing from this repository's conftest). ``__all__`` is pinned like flowcore.api's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowcore import testing

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.cli  # runs the real flow, builds wheels, starts pytest sessions

REPO = Path(__file__).resolve().parent.parent

PUBLIC = ["FlowRunner", "Result", "SetupError", "make_project"]

#: A plugin as an author's repository holds it: a source directory built with hatchling.
PLUGIN_FILES = {
    "hello/pyproject.toml": (
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "flow-plugin-hello"\nversion = "0.1.0"\n'
        'dependencies = ["flowcore", "click"]\n'
        '[project.entry-points."flow.plugins"]\nflow-plugin-hello = "flow_plugin_hello"\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["src/flow_plugin_hello"]\n'),
    "hello/src/flow_plugin_hello/__init__.py": (
        "import os\n\nimport click\n\nfrom flowcore.api import current, hookimpl\n\n"
        'FLOW_API = ">=1"\n\n\n'
        "@click.command()\n@click.argument('who', default='world')\n"
        "def hello(who):\n"
        "    '''Say hello.'''\n"
        "    context = current()\n"
        "    click.echo(f'hello {who} from {context.scope} scope')\n"
        "    click.echo(f'HOME={os.environ[\"HOME\"]}', err=True)\n\n\n"
        "@hookimpl\ndef flow_register_commands(registry):\n    registry.add(hello)\n"),
}


def test_the_testing_api_is_pinned() -> None:
    assert testing.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(testing, name).__module__ == "flowcore.testing", name


def test_the_pytest_plugin_is_an_entry_point_of_flowcore() -> None:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="pytest11") if ep.name == "flowcore"]
    assert [ep.value for ep in found] == ["flowcore.testing.plugin"]
    assert found[0].dist is not None and found[0].dist.name == "flowcore"


def test_importing_the_plugin_stays_cheap() -> None:
    """pytest imports it at the start of every session in an environment with flowcore: it
    imports flowcore.testing (its package) and nothing else of flowcore, and no click."""
    code = ("import json, sys\nbefore = set(sys.modules)\nimport pytest\nwith_pytest = set(sys.modules)\n"
            "import flowcore.testing.plugin\n"
            "print(json.dumps(sorted(set(sys.modules) - with_pytest)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    added = json.loads(out.stdout)
    assert [m for m in added if m.startswith("flowcore")] == [
        "flowcore", "flowcore._base", "flowcore._base.version", "flowcore.testing",
        "flowcore.testing.plugin"]
    assert "click" not in added


def test_the_environment_is_set_explicitly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://example.invalid/simple")
    monkeypatch.setenv("UV_INDEX_URL", "http://example.invalid/simple")
    monkeypatch.setenv("FLOW_STRICT_PLUGINS", "1")
    runner = testing.FlowRunner(tmp_path / "home", env={"EXTRA": "1"})
    env = runner.env
    assert env["FLOW_HOME"] == str(tmp_path / "home")
    assert env["HOME"] == str(runner.user_home) and Path(env["HOME"]) != Path.home()
    assert env["UV_OFFLINE"] == "1" and env["UV_NO_CONFIG"] == "1" and env["EXTRA"] == "1"
    assert not {"PIP_INDEX_URL", "UV_INDEX_URL", "FLOW_STRICT_PLUGINS"} & set(env)


def test_make_project_writes_the_flow_table(tmp_path: Path) -> None:
    project = testing.make_project(tmp_path / "app", kit="flow-kit-python",
                                   plugins=["flow-plugin-env"], files={"src/app/__init__.py": ""},
                                   settings={"python": {"test-args": ["-q"], "build-isolation": "false"}})
    import tomllib

    data = tomllib.loads((project / "pyproject.toml").read_text())
    assert data["tool"]["flow"] == {"buildkit": "flow-kit-python", "plugins": ["flow-plugin-env"],
                                    "python": {"test-args": ["-q"], "build-isolation": "false"}}
    assert data["project"]["name"] == "app"
    assert (project / "src" / "app" / "__init__.py").is_file()
    with pytest.raises(testing.SetupError, match="both a pyproject.toml in files and kit"):
        testing.make_project(tmp_path / "b", kit="k", files={"pyproject.toml": ""})
    with pytest.raises(testing.SetupError, match="outside the project"):
        testing.make_project(tmp_path / "c", files={"../escape.txt": ""})


def test_misuse_is_one_line_naming_cause_and_fix(tmp_path: Path) -> None:
    runner = testing.FlowRunner(tmp_path / "home")
    with pytest.raises(testing.SetupError) as info:
        runner.install_kit(tmp_path / "missing")
    assert str(info.value) == (f"cannot install {tmp_path / 'missing'}: no such directory or wheel "
                               "file. Pass the source directory of a build kit (with its "
                               "pyproject.toml) or a .whl file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(testing.SetupError, match=r"it has no pyproject.toml\. Pass the source"):
        runner.install_plugin(tmp_path / "empty")
    # a plugin given as a kit: flow's own refusal, passed through
    with pytest.raises(testing.SetupError) as info:
        runner.install_kit(REPO / "plugins" / "flow-plugin-env")
    assert "\n" not in str(info.value)
    assert "flow-plugin-env is a plugin, not a build kit" in str(info.value)


def test_fixtures_through_the_pytest11_entry_point(pytester: pytest.Pytester) -> None:
    """An author's suite: a plugin source directory, installed and run with the fixtures."""
    for relative, text in PLUGIN_FILES.items():
        target = pytester.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    pytester.makepyfile(test_hello=f"""
        import os
        from pathlib import Path

        HERE = Path({str(pytester.path)!r})


        def test_home_is_temporary(flow_home, flow):
            assert os.environ["FLOW_HOME"] == str(flow_home)
            assert flow.home == flow_home and not flow_home.exists()
            assert flow.env["HOME"] == str(flow.user_home) != os.environ["HOME"]


        def test_global_install_and_run(flow, flow_home):
            result = flow.install_plugin(HERE / "hello")
            assert "installed plugin flow-plugin-hello 0.1.0 as a general plugin" in result.output
            result = flow.run("hello", "you")
            assert result.exit_code == 0, result
            assert result.output == "hello you from global scope\\n"
            assert result.stderr == f"HOME={{flow.user_home}}\\n"
            assert (flow_home / "config.json").is_file()


        def test_project_plugin_needs_trust(flow, make_project):
            project = make_project("app", plugins=["flow-plugin-hello"], trust=True)
            flow.install_plugin(HERE / "hello", cwd=project)
            result = flow.run("hello", cwd=project)
            assert result.exit_code == 0, result
            assert result.output == "hello world from project scope\\n"


        def test_unknown_command_is_flows_usage_error(flow):
            result = flow.run("no-such-command")
            assert result.exit_code == 2
            assert "flow: error:" in result.stderr


        def test_invoke_in_process(flow, make_project):
            import sys
            sys.path.insert(0, str(HERE / "hello" / "src"))
            from flow_plugin_hello import hello

            project = make_project("p")
            result = flow.invoke(hello, "there", cwd=project)
            assert result.exit_code == 0 and result.exception is None
            assert result.output == "hello there from project scope\\n"
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=5)
    # pytester's HOME is its folder: the runs wrote nothing under ~ (no ~/.flow, no uv cache, no
    # flow debug log), only into the session's temporary folders
    assert sorted(p.name for p in pytester.path.iterdir() if p.name.startswith(".")) == []


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_off="def test_x(flow):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:flowcore", "-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'flow' not found*"])


def test_a_rebuild_only_when_the_source_changed(tmp_path: Path) -> None:
    for relative, text in PLUGIN_FILES.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    runner = testing.FlowRunner(tmp_path / "home")
    first = runner.build_wheel(tmp_path / "hello")
    stamp = first.stat().st_mtime_ns
    assert runner.build_wheel(tmp_path / "hello") == first and first.stat().st_mtime_ns == stamp
    module = tmp_path / "hello" / "src" / "flow_plugin_hello" / "__init__.py"
    module.write_text(module.read_text() + "\n# changed\n")
    assert runner.build_wheel(tmp_path / "hello") == first
    import zipfile

    assert b"# changed" in zipfile.ZipFile(first).read("flow_plugin_hello/__init__.py")
