"""The global config.json through the CLI: reading, writing, and what a broken file does."""

from __future__ import annotations

import json
from pathlib import Path


def test_missing_config_is_not_created_on_read(run_flow, flow_home: Path) -> None:
    result = run_flow("config")
    assert result.returncode == 0, result.stderr
    assert "activeBuildKit: (none)" in result.stdout
    assert not (flow_home / "config.json").exists()


def test_set_creates_file_with_documented_shape(run_flow, flow_home: Path) -> None:
    assert run_flow("config", "set", "cloudbuild.server", "http://127.0.0.1:7001").returncode == 0
    data = json.loads((flow_home / "config.json").read_text())
    assert data["schemaVersion"] == 1
    assert data["buildKits"] == [] and data["plugins"] == []
    assert data["activeBuildKit"] is None
    assert data["cloudbuild"] == {"server": "http://127.0.0.1:7001"}
    got = run_flow("config", "get", "cloudbuild.server")
    assert got.stdout.strip() == "http://127.0.0.1:7001"


def test_set_parses_json_values(run_flow, flow_home: Path) -> None:
    run_flow("config", "set", "retries", "3")
    run_flow("config", "set", "names", '["a", "b"]')
    data = json.loads((flow_home / "config.json").read_text())
    assert data["retries"] == 3 and data["names"] == ["a", "b"]


def test_unknown_keys_survive_a_write(run_flow, flow_home: Path) -> None:
    flow_home.mkdir(parents=True)
    original = {
        "schemaVersion": 1,
        "activeBuildKit": "flow-kit-python",
        "buildKits": [{"name": "flow-kit-python", "installed": True, "plugins": [],
                       "source": "/somewhere/kit.whl"}],
        "plugins": [],
        "lastUpdateDate": 1763683200000,
        "someFutureKey": {"nested": [1, 2, 3]},
    }
    (flow_home / "config.json").write_text(json.dumps(original))
    assert run_flow("config", "set", "x", "1").returncode == 0
    data = json.loads((flow_home / "config.json").read_text())
    assert data["someFutureKey"] == {"nested": [1, 2, 3]}
    assert data["buildKits"][0]["source"] == "/somewhere/kit.whl"
    assert data["x"] == 1


def test_managed_keys_are_refused_by_config_set(run_flow, flow_home: Path) -> None:
    result = run_flow("config", "set", "buildKits", "[]")
    assert result.returncode == 2
    assert "flow buildkit" in result.stderr
    assert not (flow_home / "config.json").exists()


def test_get_missing_key_names_the_fix(run_flow) -> None:
    result = run_flow("config", "get", "nope.nothing")
    assert result.returncode == 2
    assert result.stderr.startswith("flow: error: 'nope.nothing' is not set")
    assert "flow config set nope.nothing VALUE" in result.stderr


def test_not_json_names_file_line_column_and_is_left_unchanged(run_flow, flow_home: Path) -> None:
    flow_home.mkdir(parents=True)
    path = flow_home / "config.json"
    broken = b'{\n  "schemaVersion": 1,\n  "plugins": [,]\n}\n'
    path.write_bytes(broken)
    for args in (("config",), ("config", "set", "a", "1"), ("config", "get", "plugins")):
        result = run_flow(*args)
        assert result.returncode == 2, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(path) in lines[0]
        assert "line 3, column 15" in lines[0]
        assert "Traceback" not in result.stderr
    assert path.read_bytes() == broken
    help_result = run_flow("--help")
    assert help_result.returncode == 0
    assert "config" in help_result.stdout
    assert "line 3, column 15" in help_result.stdout
    assert path.read_bytes() == broken


def test_wrong_shape_names_the_key(run_flow, flow_home: Path) -> None:
    flow_home.mkdir(parents=True)
    path = flow_home / "config.json"
    cases = {
        "buildKits": {"buildKits": {"name": "x"}},
        "buildKits[1].name": {"buildKits": [{"name": "a"}, {"installed": True}]},
        "buildKits[0].plugins": {"buildKits": [{"name": "a", "plugins": "b"}]},
        "plugins": {"plugins": "flow-plugin-x"},
        "activeBuildKit": {"activeBuildKit": 3},
    }
    for key, data in cases.items():
        path.write_text(json.dumps(data))
        result = run_flow("config")
        assert result.returncode == 2
        assert f"key '{key}'" in result.stderr, (key, result.stderr)
        assert json.loads(path.read_text()) == data


def test_debug_shows_traceback_for_config_errors(run_flow, flow_home: Path) -> None:
    flow_home.mkdir(parents=True)
    (flow_home / "config.json").write_text("[1, 2")
    result = run_flow("--debug", "config")
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert "flow: error:" in result.stderr
