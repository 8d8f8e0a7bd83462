"""``FLOW_API``: one check (flowcore.plugins.api_version) at install (``flow plugin add``) and at
load (a plugin put into the environment behind flow's back, loaded when the command manifest is
built). ``*`` means any API version, a bare ``1`` means ``==1``, anything else is a PEP 440
specifier set; an unmatched or unreadable one is refused at install with the reason and skipped
at load with the same reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowcore._base.version import FLOW_API_VERSION
from flowcore.plugins.api_version import api_problem
from managed_env import ManagedEnv
from packages_support import config_bytes, env_dists, one_line_error, simple_plugin
from test_plugins_loading import command_plugin

MATRIX = [
    ("*", None),
    (">=1", None),
    ("1", None),
    (">=99", f"supports flow plugin API >=99 but this flowcore provides API {FLOW_API_VERSION}"),
    ("garbage", "declares FLOW_API = 'garbage', which is not a version specifier"),
]


@pytest.mark.parametrize(("api", "reason"), MATRIX)
def test_the_one_check(api: str, reason: str | None) -> None:
    assert api_problem(api) == reason


def test_bare_versions_are_exact_and_nothing_declared_is_any() -> None:
    assert api_problem(None) is None and api_problem("") is None and api_problem(1) is None
    assert api_problem("1.0") is None and api_problem(f"=={FLOW_API_VERSION}") is None
    assert api_problem("2") == f"supports flow plugin API 2 but this flowcore provides API {FLOW_API_VERSION}"
    assert api_problem("1.*") is not None and api_problem("==1.*") is None


@pytest.mark.parametrize(("api", "reason"), MATRIX)
def test_at_install(run_flow, flow_home: Path, tmp_path: Path, api: str, reason: str | None) -> None:
    wheels = tmp_path / "wheels"
    simple_plugin(wheels, "flow-plugin-hello", api=api)
    r = run_flow("plugin", "add", "flow-plugin-hello", "--no-index", "--find-links", str(wheels))
    if reason is None:
        assert r.returncode == 0, r.stderr
        r = run_flow("hello")
        assert (r.returncode, r.stdout, r.stderr) == (0, "hello\n", "")
        return
    assert r.returncode == 1
    assert f"flow: error: flow-plugin-hello {reason}. Install a version of flow-plugin-hello made " \
           f"for plugin API {FLOW_API_VERSION}." in one_line_error(r.stderr)
    assert env_dists(flow_home / "env") == set()
    assert config_bytes(flow_home) is None


@pytest.mark.parametrize(("api", "reason"), MATRIX)
def test_at_load(run_flow, flow_home: Path, tmp_path: Path, api: str, reason: str | None) -> None:
    menv = ManagedEnv(flow_home, tmp_path / "wheels")
    menv.add_plugin("flow-plugin-hello", command_plugin("hello"), api=api)  # no install check
    menv.config(plugins=["flow-plugin-hello"])
    r = run_flow("--help")
    assert r.returncode == 0
    if reason is None:
        assert "hello" in r.stdout and r.stderr == ""
        r = run_flow("hello")
        assert r.returncode == 0 and r.stdout.startswith("hello: PluginContext"), r.stderr
        return
    assert r.stderr.strip() == (f"flow: warning: plugin 'flow-plugin-hello' failed to load: it "
                                f"{reason}. Remove it with: flow plugin delete flow-plugin-hello")
