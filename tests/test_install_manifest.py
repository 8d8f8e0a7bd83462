"""After `flow plugin add`/`delete` and `flow buildkit add`/`delete` the command manifest is
valid (the command refreshes it once the change is committed: CommandRegistry.refresh), so the
next command does not rebuild it; and what makes an add cheap reads metadata exactly as
importlib.metadata and packaging do.

Real wheels installed offline by the real CLI; a plugin that counts its imports shows whether a
command imported it (a manifest rebuild imports every plugin). Every manifest a change leaves
behind is compared with the one a rebuild writes.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import pytest

from packages_support import kit_wheel, read_config, site_packages
from wheelfactory import build_wheel, plugin_wheel


def counting_plugin(wheels: Path, name: str, command: str, counter: Path, *,
                    kits: list[str] | None = None, extra: str = "",
                    version: str = "0.1.0") -> Path:
    """A plugin with one command that appends a line to ``counter`` whenever it is imported."""
    body = (f"open({str(counter)!r}, 'a').write('imported\\n')\n"
            f"@click.command(name={command!r})\ndef cmd():\n    '''Say {command}.'''\n"
            f"    click.echo({command!r})\n"
            "@hookimpl\ndef flow_register_commands(registry):\n    registry.add(cmd)\n" + extra)
    return plugin_wheel(wheels, name, body, kits=kits, version=version)


def imports(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def manifest_file(flow_home: Path, kit: str | None = None) -> Path:
    """The global scope's manifest (FLOW_HOME is ``flow_home``: the fixture sets it)."""
    from flowcore.registry.manifest import manifest_path

    path = Path(manifest_path(f"global|kit:{kit}|load:None"))
    assert path.parent == flow_home / "cache" and path.exists(), path
    return path


def rebuilt(run_flow, flow_home: Path, kit: str | None = None) -> dict:
    """The manifest a full rebuild writes now (the cached one deleted first)."""
    manifest_file(flow_home, kit).unlink()
    r = run_flow("--help")
    assert r.returncode == 0, r.stderr
    return json.loads(manifest_file(flow_home, kit).read_text())


def add(run_flow, wheel: Path, *args: str):
    r = run_flow(*args, "plugin", "add", str(wheel), "--no-index")
    assert r.returncode == 0, r.stderr
    return r


def test_after_add_the_next_command_does_not_rebuild_and_lists_the_new_command(
        run_flow, flow_home, tmp_path):
    wheels = tmp_path / "wheels"
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    add(run_flow, counting_plugin(wheels, "flow-plugin-first", "first-cmd", first,
                                  extra="@hookimpl\ndef flow_before_command(command_name):\n"
                                        "    pass\n"))
    add(run_flow, counting_plugin(wheels, "flow-plugin-second", "second-cmd", second))
    path = manifest_file(flow_home)
    stamp, written = path.stat().st_mtime_ns, path.read_text()
    counts = imports(first), imports(second)

    r = run_flow("--help")
    assert r.returncode == 0, r.stderr
    assert "second-cmd" in r.stdout and "[flow-plugin-second]" in r.stdout
    assert "first-cmd" in r.stdout
    assert path.stat().st_mtime_ns == stamp  # not rebuilt, not even rewritten
    assert (imports(first), imports(second)) == counts  # no plugin imported for the help
    r = run_flow("second-cmd")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "second-cmd"
    assert path.stat().st_mtime_ns == stamp

    # What the add wrote is exactly what a rebuild writes.
    assert rebuilt(run_flow, flow_home) == json.loads(written)


def test_the_first_add_into_a_new_environment_leaves_a_valid_manifest(run_flow, flow_home,
                                                                      tmp_path):
    counter = tmp_path / "only.log"
    add(run_flow, counting_plugin(tmp_path / "wheels", "flow-plugin-only", "only-cmd", counter))
    path = manifest_file(flow_home)
    stamp, written, count = path.stat().st_mtime_ns, path.read_text(), imports(counter)
    r = run_flow("--help")
    assert "only-cmd" in r.stdout
    assert path.stat().st_mtime_ns == stamp and imports(counter) == count
    assert rebuilt(run_flow, flow_home) == json.loads(written)


def test_a_kit_bound_plugin_of_the_active_kit(run_flow, flow_home, tmp_path):
    wheels = tmp_path / "wheels"
    r = run_flow("buildkit", "add", str(kit_wheel(wheels, "flow-kit-demo")), "--no-index")
    assert r.returncode == 0, r.stderr
    counter = tmp_path / "bound.log"
    add(run_flow, counting_plugin(wheels, "flow-plugin-bound", "bound-cmd", counter,
                                  kits=["flow-kit-demo"]))
    assert read_config(flow_home)["buildKits"][0]["plugins"] == ["flow-plugin-bound"]
    path = manifest_file(flow_home, "flow-kit-demo")
    stamp, written = path.stat().st_mtime_ns, path.read_text()
    r = run_flow("--help")
    assert "bound-cmd" in r.stdout and "hello" in r.stdout
    assert path.stat().st_mtime_ns == stamp
    data = json.loads(written)
    assert [(p["name"], p["kind"]) for p in data["plugins"]] == [
        ("flow-kit-demo", "kit"), ("flow-plugin-bound", "kit-plugin")]
    assert rebuilt(run_flow, flow_home, "flow-kit-demo") == data


def test_after_delete_the_next_command_does_not_rebuild(run_flow, flow_home, tmp_path):
    wheels = tmp_path / "wheels"
    kept, gone = tmp_path / "kept.log", tmp_path / "gone.log"
    add(run_flow, counting_plugin(wheels, "flow-plugin-kept", "kept-cmd", kept))
    add(run_flow, counting_plugin(wheels, "flow-plugin-gone", "gone-cmd", gone))
    r = run_flow("plugin", "delete", "flow-plugin-gone")
    assert r.returncode == 0, r.stderr
    path = manifest_file(flow_home)
    stamp, written, count = path.stat().st_mtime_ns, path.read_text(), imports(kept)
    r = run_flow("--help")
    assert "kept-cmd" in r.stdout and "gone-cmd" not in r.stdout
    assert path.stat().st_mtime_ns == stamp and imports(kept) == count
    assert rebuilt(run_flow, flow_home) == json.loads(written)


def unchanged_by_help(run_flow, path: Path) -> str:
    """Run ``flow --help`` and check it neither rebuilt nor rewrote the manifest at ``path``;
    its output."""
    stamp = path.stat().st_mtime_ns
    r = run_flow("--help")
    assert r.returncode == 0, r.stderr
    assert path.stat().st_mtime_ns == stamp
    return r.stdout + r.stderr


def test_a_delete_that_uncovers_a_shadowed_command(run_flow, flow_home, tmp_path):
    wheels = tmp_path / "wheels"
    add(run_flow, counting_plugin(wheels, "flow-plugin-aaa", "same", tmp_path / "a.log"))
    add(run_flow, counting_plugin(wheels, "flow-plugin-bbb", "same", tmp_path / "b.log"))
    assert run_flow("plugin", "delete", "flow-plugin-aaa").returncode == 0
    path = manifest_file(flow_home)
    written = json.loads(path.read_text())
    out = unchanged_by_help(run_flow, path)
    assert "[flow-plugin-bbb]" in out and "skipped" not in out
    assert written["commands"][0]["source"] == "flow-plugin-bbb"
    assert rebuilt(run_flow, flow_home) == written


def test_a_command_name_taken_twice_is_resolved_by_the_add(run_flow, flow_home, tmp_path):
    """Precedence is decided by the refresh after the add, which warns right away."""
    wheels = tmp_path / "wheels"
    add(run_flow, counting_plugin(wheels, "flow-plugin-aaa", "same", tmp_path / "a.log"))
    r = add(run_flow, counting_plugin(wheels, "flow-plugin-bbb", "same", tmp_path / "b.log"))
    skipped = ("command 'same' of plugin 'flow-plugin-bbb' is skipped: plugin 'flow-plugin-aaa' "
               "already provides it")
    assert skipped in r.stderr
    path = manifest_file(flow_home)
    written = json.loads(path.read_text())
    assert skipped in unchanged_by_help(run_flow, path)
    assert written["commands"][0]["source"] == "flow-plugin-aaa"
    assert rebuilt(run_flow, flow_home) == written


def test_a_plugin_failing_in_flow_register_commands_is_reported_and_stays_installed(
        run_flow, flow_home, tmp_path):
    """It passed the import check: the add commits, and the refresh reports its failure as a
    warning (even with --strict-plugins: the install stands; the next command is strict)."""
    wheels = tmp_path / "wheels"
    add(run_flow, counting_plugin(wheels, "flow-plugin-fine", "fine", tmp_path / "f.log"))
    body = "@hookimpl\ndef flow_register_commands(registry):\n    raise RuntimeError('no')\n"
    r = add(run_flow, plugin_wheel(wheels, "flow-plugin-raises", body), "--strict-plugins")
    assert "installed plugin flow-plugin-raises" in r.stdout
    assert "plugin 'flow-plugin-raises' failed" in r.stderr
    assert "flow-plugin-raises" in read_config(flow_home)["plugins"]
    path = manifest_file(flow_home)
    written = json.loads(path.read_text())
    out = unchanged_by_help(run_flow, path)
    assert "plugin 'flow-plugin-raises' failed" in out and "fine" in out
    assert rebuilt(run_flow, flow_home) == written


def test_an_upgrade_of_a_plugin_this_run_had_imported_is_loaded_as_installed(
        run_flow, flow_home, tmp_path):
    """A plugin implementing flow_before_command is imported before the add runs; the refresh
    loads the upgraded files, not the module flow's process held."""
    wheels = tmp_path / "wheels"
    hook = "@hookimpl\ndef flow_before_command(command_name):\n    pass\n"
    add(run_flow, counting_plugin(wheels, "flow-plugin-up", "old-cmd", tmp_path / "o.log",
                                  extra=hook))
    add(run_flow, counting_plugin(wheels, "flow-plugin-up", "new-cmd", tmp_path / "n.log",
                                  extra=hook, version="0.2.0"))
    path = manifest_file(flow_home)
    written = json.loads(path.read_text())
    out = unchanged_by_help(run_flow, path)
    assert "new-cmd" in out and "old-cmd" not in out
    assert rebuilt(run_flow, flow_home) == written


def test_after_buildkit_add_and_delete_the_next_command_does_not_rebuild(run_flow, flow_home,
                                                                         tmp_path):
    wheels = tmp_path / "wheels"
    add(run_flow, counting_plugin(wheels, "flow-plugin-kept", "kept-cmd", tmp_path / "k.log"))
    r = run_flow("buildkit", "add", str(kit_wheel(wheels, "flow-kit-demo")), "--no-index")
    assert r.returncode == 0, r.stderr
    path = manifest_file(flow_home, "flow-kit-demo")
    written = json.loads(path.read_text())
    out = unchanged_by_help(run_flow, path)
    assert "hello" in out and "kept-cmd" in out
    assert rebuilt(run_flow, flow_home, "flow-kit-demo") == written

    r = run_flow("buildkit", "delete", "flow-kit-demo")
    assert r.returncode == 0, r.stderr
    kit = read_config(flow_home).get("activeBuildKit")  # (no kit installed: none active)
    path = manifest_file(flow_home, kit)
    written = json.loads(path.read_text())
    out = unchanged_by_help(run_flow, path)
    assert "hello" not in out and "kept-cmd" in out
    assert rebuilt(run_flow, flow_home, kit) == written


def test_a_plugin_that_does_not_import_is_still_refused_before_the_config_changes(
        run_flow, flow_home, tmp_path):
    wheels = tmp_path / "wheels"
    add(run_flow, counting_plugin(wheels, "flow-plugin-fine", "fine", tmp_path / "f.log"))
    before = (flow_home / "config.json").read_bytes()
    r = run_flow("plugin", "add", str(plugin_wheel(wheels, "flow-plugin-broken", "1/0\n")),
                 "--no-index")
    assert r.returncode != 0
    assert "flow-plugin-broken cannot be imported" in r.stderr
    assert (flow_home / "config.json").read_bytes() == before
    r = run_flow("--help")
    assert "fine" in r.stdout and "broken" not in r.stdout + r.stderr


# -- reading metadata without importlib.metadata / packaging ---------------------------------


def test_entry_points_and_distributions_read_as_importlib_metadata_reads_them(tmp_path,
                                                                            monkeypatch):
    from flowcore.packages.installer import _read_dists, _read_dists_with_metadata
    from flowcore.plugins.system import entry_point_values
    from managed_env import install, make_env

    wheels = tmp_path / "wheels"
    env_dir = make_env(tmp_path / "env")
    eps = {"flow.plugins": {"b": "mod_b:obj", "a": "mod_a"}, "flow.kits": {"k": "kit_mod"},
           "console_scripts": {"x": "x:main"}}
    install(env_dir, build_wheel(wheels, "Odd.Name_Dist", {"odd/__init__.py": ""},
                                 entry_points=eps, requires=("click>=8", "other; extra=='x'")),
            plugin_wheel(wheels, "flow-plugin-plain", "X = 1\n"),
            build_wheel(wheels, "no-entry-points", {"nep/__init__.py": ""}))
    sp = site_packages(env_dir)
    monkeypatch.setattr(sys, "path", [*sys.path, str(sp)])
    for name in ("odd-name-dist", "ODD_name.dist", "flow-plugin-plain", "no-entry-points",
                 "click", "not-installed-anywhere"):
        dist = next(iter(importlib.metadata.distributions(name=name)), None)
        expected = None if dist is None else [ep.value for ep in dist.entry_points
                                              if ep.group in ("flow.kits", "flow.plugins")]
        assert entry_point_values(name) == expected, name
    assert entry_point_values("odd-name-dist") == ["mod_b:obj", "mod_a", "kit_mod"]
    fast, slow = _read_dists([sp]), _read_dists_with_metadata([sp])
    assert fast == slow and list(fast) == list(slow)
    assert fast["odd-name-dist"].requires == ("click>=8", "other; extra=='x'")


@pytest.mark.parametrize("filename", [
    "flow_plugin_env-0.1.0-py3-none-any.whl", "Foo.Bar-1-py3-none-any.whl",
    "x-1.0rc1-py3-none-any.whl", "x-1-2b-py3-none-any.whl",
    "x_y-10.2.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "a__b-1-py3-none-any.whl", "x-1-py3-none.whl", "x-1.0-py3-none-any.whl",
])
def test_wheel_names_as_packaging_reads_them(filename, tmp_path):
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    from flowcore._base.errors import InstallError
    from flowcore.config.environment import canonical_name
    from flowcore.packages.manager import parse_spec

    wheel = tmp_path / filename
    wheel.write_bytes(b"")
    try:
        expected: str | None = canonical_name(parse_wheel_filename(filename)[0])
    except InvalidWheelFilename:
        expected = None
    if expected is None:
        with pytest.raises(InstallError):
            parse_spec(str(wheel))
    else:
        assert parse_spec(str(wheel)).name == expected
