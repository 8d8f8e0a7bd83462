"""`flow-cloudbuild-server` start-up: config errors are one line with exit status 2, and a first
start without tokens makes one and keeps it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cloudbuild_server_support import ServerProc, http_get, server_env


def run_server(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flow_kit_cloudbuild.server", *args], capture_output=True,
                          text=True, timeout=timeout, env=server_env())


@pytest.mark.parametrize("config, needle", [
    ({"build-commands": "npm run build"}, "build-commands"),
    ({"freeze-windows": [{"name": "x", "start": "soon", "end": "later"}]}, "ISO 8601"),
    ({"allowed-protocols": ["file"]}, "file"),
    ({"checks": [["sh -c true", ""]]}, "argv"),
    ({"no-such-setting": 1}, "unknown setting"),
    ({"concurrency": 0}, "concurrency"),
])
def test_bad_config_is_one_line_with_exit_status_2(tmp_path, config, needle):
    cfg = tmp_path / "server.json"
    cfg.write_text(json.dumps(config))
    result = run_server("--config", str(cfg), "--data-dir", str(tmp_path / "d"), "--port", "0")
    assert result.returncode == 2, result
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("flow-cloudbuild-server: error: ") and needle in line
    assert "Traceback" not in result.stderr


def test_broken_toml_names_the_file(tmp_path):
    cfg = tmp_path / "server.toml"
    cfg.write_text("checks = [\n")
    result = run_server("--config", str(cfg), "--port", "0", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2 and str(cfg) in result.stderr and "TOML" in result.stderr


def test_first_start_without_tokens_makes_and_keeps_one(tmp_path):
    s = ServerProc(tmp_path / "d", tokens=())
    s.start()
    try:
        token = (tmp_path / "d" / "server-token").read_text().strip()
        assert len(token) >= 32 and oct((tmp_path / "d" / "server-token").stat().st_mode)[-3:] == "600"
        assert http_get(s.url + "/api/tasks/" + "0" * 24, token=token)[0] == 404
        assert http_get(s.url + "/api/tasks/" + "0" * 24, token="other")[0] == 401
    finally:
        s.stop()
    s.start()  # the same token after a restart
    try:
        assert http_get(s.url + "/api/tasks/" + "0" * 24, token=token)[0] == 404
    finally:
        s.stop()
