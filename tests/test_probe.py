"""flowcore.packages.probe: what a kit or plugin declares, read by importing it in the managed
environment's own interpreter (never in flow's process).

A real venv (uv) whose site-packages holds small modules: one that imports, ones that raise,
one that hangs (the probe is bounded and leaves no process behind).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from flowcore._base.errors import InstallError
from flowcore._base.version import FLOW_API_VERSION
from flowcore.config.environment import site_packages_dir
from flowcore.packages.installer import ManagedEnv
from flowcore.packages.probe import Declarations, api_problem, read_declarations
from managed_env import make_env

MODULES = {
    "good_kit.py": 'FLOW_BUILD_KITS = ("flow-kit-a", "flow-kit-b")\nFLOW_API = ">=1"\n',
    "general_plugin.py": "def hello():\n    pass\n",
    "one_kit.py": 'FLOW_BUILD_KITS = "flow-kit-a"\nFLOW_API = 1\n',
    "with_object.py": ('FLOW_API = ">=1"\nFLOW_BUILD_KITS = ["flow-kit-module"]\n'
                       'class Plugin:\n    FLOW_BUILD_KITS = ["flow-kit-object"]\n'),
    "raises.py": 'raise RuntimeError("boom at import")\n',
    "exits.py": "import sys\nsys.exit(3)\n",
    "chatty.py": 'print("hello from a plugin")\nprint("[not json either]")\nFLOW_API = ">=1"\n',
    "no_newline.py": 'import os, sys\nsys.stdout.write("half a line")\nos.write(1, b"[raw")\nFLOW_API = ">=1"\n',
    "at_exit.py": 'import atexit\natexit.register(print, "bye")\nFLOW_API = ">=1"\n',
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> ManagedEnv:
    root = make_env(tmp_path_factory.mktemp("probe") / "env", visible=False)
    sp = site_packages_dir(root)
    for name, text in MODULES.items():
        (sp / name).write_text(text)
    return ManagedEnv(root)


def test_declarations_of_modules_that_import(env: ManagedEnv) -> None:
    got = read_declarations(env, ["good_kit", "general_plugin", "one_kit", "with_object:Plugin",
                                  "with_object"])
    assert got["good_kit"] == Declarations("good_kit", ["flow-kit-a", "flow-kit-b"], ">=1", None)
    assert got["general_plugin"] == Declarations("general_plugin", None, None, None)
    assert got["one_kit"] == Declarations("one_kit", ["flow-kit-a"], "1", None)  # a str is one kit
    # an object's own declaration wins over its module's; what it lacks comes from the module
    assert got["with_object:Plugin"] == Declarations("with_object:Plugin", ["flow-kit-object"], ">=1", None)
    assert got["with_object"].build_kits == ["flow-kit-module"]


def test_modules_that_fail_to_import_are_reported_with_their_error(env: ManagedEnv) -> None:
    got = read_declarations(env, ["raises", "exits", "no_such_module", "good_kit:missing", "good_kit"])
    assert got["raises"].error == "RuntimeError: boom at import"
    assert got["exits"].error == "SystemExit: 3"  # even sys.exit at import is caught
    assert got["no_such_module"].error.startswith("ModuleNotFoundError: ")  # type: ignore[union-attr]
    assert got["good_kit:missing"].error.startswith("AttributeError: ")  # type: ignore[union-attr]
    assert got["good_kit"].error is None  # one broken module does not hide the others
    assert all(d.build_kits is None and d.api is None for k, d in got.items() if k != "good_kit")


def test_a_module_printing_at_import_does_not_confuse_the_probe(env: ManagedEnv) -> None:
    got = read_declarations(env, ["chatty", "no_newline", "at_exit"])
    assert got["chatty"] == Declarations("chatty", None, ">=1", None)
    assert got["no_newline"] == Declarations("no_newline", None, ">=1", None)  # not even an end of line
    assert got["at_exit"] == Declarations("at_exit", None, ">=1", None)  # nor after the probe's answer


def test_the_probe_runs_outside_flows_process(env: ManagedEnv) -> None:
    """In the environment's own interpreter, started with -I (no PYTHON* variable, no working
    directory on sys.path)."""
    import sys

    (env.site_packages / "where.py").write_text(
        "import os, sys\nFLOW_BUILD_KITS = [str(os.getpid()), str(sys.flags.isolated)]\n")
    got = read_declarations(env, ["good_kit", "raises", "where"])
    assert got["good_kit"].error is None and got["raises"].error
    assert not {"good_kit", "raises", "where"} & set(sys.modules)
    pid, isolated = got["where"].build_kits or []
    assert int(pid) != os.getpid() and isolated == "1"


def test_no_values_runs_nothing() -> None:
    assert read_declarations(ManagedEnv(Path("/nonexistent/env")), []) == {}


def test_an_environment_without_python_is_an_install_error(tmp_path: Path) -> None:
    with pytest.raises(InstallError) as info:
        read_declarations(ManagedEnv(tmp_path / "env"), ["good_kit"])
    assert "cannot run the flow environment's Python" in info.value.cause
    assert info.value.fix == "Run: flow doctor --fix"


def test_a_module_that_hangs_at_import_is_bounded_and_killed(env: ManagedEnv, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    (env.site_packages / "hangs.py").write_text(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(3600)\n")
    t0 = time.monotonic()
    with pytest.raises(InstallError) as info:
        read_declarations(env, ["good_kit", "hangs"], timeout=3)
    assert time.monotonic() - t0 < 30
    assert "good_kit, hangs" in info.value.cause and "did not finish within 3 s" in info.value.cause
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped: nothing left running
        os.kill(pid, 0)


@pytest.mark.parametrize("api", [None, "", "*", ">=1", f"=={FLOW_API_VERSION}", ">=1,<99", ">=0.1"])
def test_api_versions_this_flowcore_provides(api: str | None) -> None:
    assert api_problem("flow-plugin-x", api) is None


def test_api_versions_this_flowcore_does_not_provide() -> None:
    problem = api_problem("flow-plugin-x", ">=99")
    assert problem == (f"flow-plugin-x supports flow plugin API >=99 but this flowcore provides "
                       f"API {FLOW_API_VERSION}")
    assert api_problem("flow-plugin-x", "<1") is not None
    assert api_problem("flow-plugin-x", "one or more") == (
        "flow-plugin-x declares FLOW_API = 'one or more', which is not a version specifier")


def test_a_module_flow_imported_before_the_install_is_imported_as_it_is_now(
        env: ManagedEnv) -> None:
    """flow's process may have imported a plugin (building the command manifest) that the
    install then replaced: the probe sees the new files, not the module flow holds."""
    import sys

    (env.site_packages / "replaced.py").write_text('FLOW_API = ">=1"\n')
    sys.path.append(str(env.site_packages))
    try:
        import replaced  # noqa: F401 - what flow's process holds

        (env.site_packages / "replaced.py").write_text('raise RuntimeError("new version")\n')
        got = read_declarations(env, ["replaced"])
        assert got["replaced"].error == "RuntimeError: new version"
        assert sys.modules["replaced"].FLOW_API == ">=1"  # flow's own process is untouched
    finally:
        sys.path.remove(str(env.site_packages))
        sys.modules.pop("replaced", None)
