"""flowcore.registry.manifest: the cached command tree, its fingerprint and when a cache stops counting.

Real files under a temporary FLOW_HOME; a "site-packages" is a plain directory of dist-info
folders, which is all the fingerprint looks at.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowcore.plugins import records
from flowcore.plugins.records import CommandRecord, Failure, PluginRecord
from flowcore.registry import manifest
from flowcore.registry.manifest import Manifest


@pytest.fixture
def world(flow_home: Path, tmp_path: Path) -> dict[str, Path]:
    """A config file, a site-packages with one distribution, and a plugin module file."""
    config = tmp_path / "config.json"
    config.write_text('{"schemaVersion": 1}')
    site = tmp_path / "site-packages"
    dist = site / "flow_plugin_x-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "entry_points.txt").write_text("[flow.plugins]\nx = flow_plugin_x\n")
    module = site / "flow_plugin_x.py"
    module.write_text("# plugin\n")
    return {"config": config, "site": site, "dist": dist, "module": module}


def fp(world: dict[str, Path], load_plugins: str | None = None) -> list:
    return manifest.fingerprint([world["config"]], [world["site"]], load_plugins)


def sample(world: dict[str, Path], key: str = "global|kit-a") -> Manifest:
    return Manifest(
        key=key,
        fingerprint=fp(world),
        kit={"name": "flow-kit-a", "short": "a"},
        plugins=[PluginRecord("flow-plugin-x", "general", ["flow_plugin_x"],
                              ["flow_register_commands"], [records.file_stamp(str(world["module"]))]),
                 PluginRecord("flow-kit-a", "kit", ["flow_kit_a"], ["flow_kit_info"], [])],
        commands=[CommandRecord("hello", "Say hello.", "flow-plugin-x", "general")],
        failures=[Failure("flow-plugin-bad", "general", "ImportError: nope")],
        warnings=["one warning"],
        env_dirs=[str(world["site"])],
    )


def test_a_saved_manifest_loads_back_equal(world: dict[str, Path]) -> None:
    saved = sample(world)
    manifest.save(saved)
    loaded = manifest.load(saved.key, fp(world))
    assert loaded is not None
    assert loaded.to_json() == saved.to_json()
    assert loaded.command("hello") == CommandRecord("hello", "Say hello.", "flow-plugin-x", "general")
    assert loaded.command("nope") is None
    assert loaded.plugin("flow-kit-a").kind == "kit"  # type: ignore[union-attr]
    assert [p.name for p in loaded.implementing("flow_kit_info", "other")] == ["flow-kit-a"]
    assert loaded.failures == [Failure("flow-plugin-bad", "general", "ImportError: nope")]


def test_each_key_has_its_own_file_under_the_cache_dir(world: dict[str, Path], flow_home: Path) -> None:
    a, b = Path(manifest.manifest_path("global|kit-a")), Path(manifest.manifest_path("project|/p|kit-a"))
    assert a != b and a.parent == b.parent == flow_home / "cache"
    manifest.save(sample(world, "global|kit-a"))
    manifest.save(sample(world, "project|/p|kit-a"))
    assert manifest.load("global|kit-a", fp(world)).key == "global|kit-a"  # type: ignore[union-attr]
    assert manifest.load("project|/p|kit-a", fp(world)).key == "project|/p|kit-a"  # type: ignore[union-attr]
    assert manifest.load("never-saved", fp(world)) is None


def test_a_file_holding_another_key_is_not_taken(world: dict[str, Path]) -> None:
    saved = sample(world, "key-one")
    manifest.save(saved)
    Path(manifest.manifest_path("key-two")).write_bytes(saved.to_json())  # as if the names collided
    assert manifest.load("key-two", fp(world)) is None


def test_a_changed_config_file_invalidates_the_cache(world: dict[str, Path]) -> None:
    manifest.save(sample(world))
    world["config"].write_text('{"schemaVersion": 1, "plugins": ["flow-plugin-y"]}')
    assert manifest.load("global|kit-a", fp(world)) is None


def test_installing_removing_or_changing_a_distribution_invalidates_the_cache(world: dict[str, Path]) -> None:
    before = fp(world)
    new = world["site"] / "flow_plugin_y-2.0.dist-info"
    new.mkdir()
    installed = fp(world)
    assert installed != before
    new.rmdir()
    assert fp(world) == before
    (world["dist"] / "entry_points.txt").write_text("[flow.plugins]\nx = flow_plugin_x\ny = other\n")
    assert fp(world) != before  # entry points changed (an upgrade in place)
    (world["dist"] / "direct_url.json").write_text('{"url": "file:///src", "dir_info": {"editable": true}}')
    manifest.save(sample(world))
    (world["dist"] / "direct_url.json").write_text('{"url": "file:///elsewhere", "dir_info": {}}')
    assert manifest.load("global|kit-a", fp(world)) is None  # reinstalled from another source


def test_flow_load_plugins_is_part_of_the_fingerprint(world: dict[str, Path]) -> None:
    manifest.save(sample(world))
    assert manifest.load("global|kit-a", fp(world, load_plugins="flow-plugin-x")) is None
    assert manifest.load("global|kit-a", fp(world)) is not None


def test_editing_a_loaded_plugin_module_invalidates_the_cache(world: dict[str, Path]) -> None:
    manifest.save(sample(world))
    assert manifest.load("global|kit-a", fp(world)) is not None
    world["module"].write_text("# plugin, edited in place (an editable install)\n")
    assert manifest.load("global|kit-a", fp(world)) is None


def test_a_deleted_plugin_module_invalidates_the_cache(world: dict[str, Path]) -> None:
    manifest.save(sample(world))
    world["module"].unlink()
    assert manifest.load("global|kit-a", fp(world)) is None


@pytest.mark.parametrize("content", [b"", b"not json", b"[]", b'{"format": 1}', b'{"format": 99, "key": "k"}'])
def test_an_unreadable_or_foreign_cache_counts_as_missing(world: dict[str, Path], content: bytes) -> None:
    path = Path(manifest.manifest_path("global|kit-a"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    assert Manifest.from_json(content) is None
    assert manifest.load("global|kit-a", fp(world)) is None


def test_a_cache_that_cannot_be_written_is_simply_not_cached(world: dict[str, Path], flow_home: Path) -> None:
    flow_home.parent.mkdir(parents=True, exist_ok=True)
    flow_home.write_text("a file where FLOW_HOME's directory should be")
    manifest.save(sample(world))  # no error
    assert manifest.load("global|kit-a", fp(world)) is None


def test_the_fingerprint_does_not_depend_on_the_order_of_a_listing(world: dict[str, Path]) -> None:
    for name in ("zz_last-1.0.dist-info", "aa_first-1.0.dist-info"):
        (world["site"] / name).mkdir()
    listing = fp(world)[4][0][1]
    names = [entry[0] for entry in listing]
    assert names == sorted(names) == ["aa_first-1.0.dist-info", "flow_plugin_x-1.0.dist-info",
                                      "zz_last-1.0.dist-info"]


def test_a_missing_site_dir_is_recorded_not_an_error(world: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-env" / "site-packages"
    got = manifest.fingerprint([world["config"], tmp_path / "absent.toml"], [missing], None)
    assert [str(missing), None] in got[4]
    assert [str(tmp_path / "absent.toml"), None] in got[2]
    os.makedirs(missing)
    assert manifest.fingerprint([world["config"], tmp_path / "absent.toml"], [missing], None) != got
