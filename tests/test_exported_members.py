"""The public API is exactly what it says it is (after httpx's tests/test_exported_members.py).

``flowcore.api.__all__`` is everything a kit or plugin may import from flowcore; ``flowcore``
re-exports the same names without importing the API module on the start-up path. Adding or
removing a name is an API change: change the list here, the docs, and, when it breaks plugins,
``FLOW_API_VERSION``.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path

import click
import pytest

import flowcore
from flowcore import api

PUBLIC = [
    "FLOW_API_VERSION",
    "__version__",
    "hookimpl",
    "hookspec",
    "HookSpecs",
    "HookCaller",
    "KitInfo",
    "Template",
    "Registry",
    "CoreContext",
    "KitContext",
    "PluginConfig",
    "Packages",
    "InstalledPackage",
    "current",
    "FlowError",
    "UsageError",
    "ConfigError",
    "InstallError",
    "PluginLoadError",
    "warn",
    "printable",
    "printable_line",
    "choose",
    "interactive",
    "atomic_write_bytes",
    "flow_home",
    "site_packages_dir",
    "uv_binary",
    "watch",
    "Change",
]


def test_the_public_api_is_pinned():
    assert api.__all__ == PUBLIC
    assert flowcore.__all__ == api.__all__


def test_every_public_name_resolves_to_the_same_object_from_both_modules():
    for name in PUBLIC:
        assert getattr(flowcore, name) is getattr(api, name), name
    assert flowcore.FLOW_API_VERSION == "1"


def test_private_names_are_not_reexported():
    for name in ("Flow", "PluginSystem", "EffectiveConfig", "PluginContext", "ConfigSection"):
        with pytest.raises(AttributeError):
            getattr(flowcore, name)
        with pytest.raises(AttributeError):
            getattr(api, name)


def test_importing_flowcore_or_the_api_stays_cheap():
    """`flow --help` imports flowcore; neither it nor the API module may pull in pluggy
    (and with it importlib.metadata) or the watch loop before a name needs them."""
    code = (
        "import json, sys\n"
        "import flowcore\n"
        "a = sorted(m for m in ('flowcore.api', 'pluggy', 'importlib.metadata') if m in sys.modules)\n"
        "import flowcore.api\n"
        "b = sorted(m for m in ('pluggy', 'importlib.metadata', 'watchfiles', 'flowcore._base.watching',"
        " 'questionary') if m in sys.modules)\n"
        "print(json.dumps([a, b]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [[], []]


def _annotations(obj: object) -> list[str]:
    """Annotation strings of a function, or of every public member of a Protocol class."""
    if inspect.isclass(obj):
        out = []
        for name, member in vars(obj).items():
            if name.startswith("_"):
                continue
            target = member.fget if isinstance(member, property) else member
            if callable(target):
                out += _annotations(target)
        return out
    return [str(v) for v in getattr(obj, "__annotations__", {}).values()]


def test_no_any_on_the_public_surface():
    from flowcore.plugins import hookspecs

    for name in PUBLIC:
        obj = getattr(api, name)
        if inspect.isfunction(obj) or (inspect.isclass(obj) and typing.Protocol in obj.__mro__):
            assert not [a for a in _annotations(obj) if "Any" in a], name
    for name, func in vars(hookspecs).items():
        if name.startswith("flow_"):
            assert not [a for a in _annotations(func) if "Any" in a], name


def test_flows_own_objects_implement_the_protocols(tmp_path, monkeypatch):
    from flowcore.cli.app import Flow
    from flowcore.config import RunOptions
    from flowcore.plugins.registry_view import RegistryView

    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({
        "activeBuildKit": "flow-kit-demo",
        "buildKits": [{"name": "flow-kit-demo", "installed": True, "plugins": ["flow-plugin-k"]}],
        "plugins": ["flow-plugin-g"],
    }))
    monkeypatch.setenv("FLOW_HOME", str(home))
    flow = Flow(RunOptions(), cwd=tmp_path)
    kit = flow.plugins.context_for("flow-kit-demo")
    bound = flow.plugins.context_for("flow-plugin-k")
    general = flow.plugins.context_for("flow-plugin-g")
    for context in (kit, bound, general):
        assert isinstance(context, api.CoreContext)
        assert isinstance(context.config, api.PluginConfig)
        assert isinstance(context.packages, api.Packages)
        assert context.scope == "global" and context.project_root is None
        assert context.active_kit == "flow-kit-demo"
        assert context.plugins_to_load == [("flow-plugin-k", "kit"), ("flow-plugin-g", "general")]
        assert context.flow_home == home
        assert context.environments == [home / "env"]
    assert isinstance(kit, api.KitContext) and isinstance(bound, api.KitContext)
    assert not isinstance(general, api.KitContext)
    assert (kit.kit, kit.kit_short_name, bound.kit_config.section) == ("flow-kit-demo", "demo", {})
    assert isinstance(RegistryView("flow-plugin-g"), api.Registry)


def test_current_outside_any_flow_run_is_a_lookup_error():
    with pytest.raises(LookupError):
        api.current()

    @click.command()
    def probe() -> None:
        with pytest.raises(LookupError):
            api.current()
        click.echo("ok")

    from click.testing import CliRunner

    assert CliRunner().invoke(probe, []).output == "ok\n"


def test_warn_is_one_line_with_cause_and_fix(capsys):
    api.warn("something is odd.", "Do this")
    api.warn("no fix here")
    assert capsys.readouterr().err.splitlines() == [
        "flow: warning: something is odd. Do this", "flow: warning: no fix here"]


def test_atomic_write_bytes_replaces_the_file(tmp_path: Path):
    target = tmp_path / "a" / "b.json"
    api.atomic_write_bytes(target, b"one")
    api.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_choose_without_a_terminal_names_the_flag():
    with pytest.raises(api.UsageError) as info:
        api.choose("Which?", ["a", "b"], argument="NAME", command="flow thing")
    assert info.value.message == ("no NAME given and no terminal to choose from. "
                                  "Pass it as an argument: flow thing NAME")
    assert info.value.exit_code == 2
