"""Issue 22, item 6: a FLOW_HOME or a uv cache flow cannot write is one line naming the path and
the variable that moves it (FLOW_HOME, UV_CACHE_DIR), exit code 2 (a configuration error, as
docs/configuration.md's table has it), no traceback; ``flow --help`` still works.

The tests run as root, where ``chmod 0555`` stops no write. So "read-only" is made two honest
ways, both real kernel refusals: a read-only bind mount of the directory in a private mount
namespace (``unshare -rm`` + ``mount -o bind,ro``, EROFS; skipped where the kernel allows no
user namespaces), and the variable pointing below a regular file (ENOTDIR, everywhere).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from offline import FLOW, REPO, offline_env

ENV_PLUGIN = REPO / "plugins" / "flow-plugin-env"


def _can_mount_read_only(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    r = subprocess.run(["unshare", "-rm", "sh", "-c",
                        f'mount -o bind,ro "{probe}" "{probe}" && ! touch "{probe}/x"'],
                       capture_output=True, timeout=30)
    return r.returncode == 0


def flow_read_only(read_only: Path, env: dict[str, str], cwd: Path,
                   *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI with ``read_only`` bind-mounted read-only over itself (only for it)."""
    script = 'mount -o bind,ro "$0" "$0" && exec "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, str(read_only), *FLOW, *args],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr
    return lines[0]


@pytest.fixture
def read_only_ok(tmp_path: Path) -> None:
    if not _can_mount_read_only(tmp_path):
        pytest.skip("needs unshare with user and mount namespaces (a read-only bind mount)")


def test_a_read_only_flow_home(read_only_ok, run_flow, flow_home: Path, tmp_path: Path) -> None:
    assert run_flow("config", "set", "x", "1").returncode == 0  # a home with a config in it
    env = offline_env(flow_home)
    for args in (("config", "set", "x", "2"), ("-g", "buildkit", "add", str(REPO / "kits" /
                                                                         "flow-kit-python"),
                                              "--no-index")):
        r = flow_read_only(flow_home, env, tmp_path, *args)
        assert r.returncode == 2, r.stderr
        line = one_line(r)
        assert line.startswith(f"flow: error: cannot write to flow's home {flow_home} (")
        assert "Read-only file system" in line
        assert line.endswith("Make it writable, or move it: set FLOW_HOME to a writable "
                             "directory")
    r = flow_read_only(flow_home, env, tmp_path, "--help")  # the manifest cache: not written
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "Commands:" in r.stdout and "buildkit" in r.stdout
    r = flow_read_only(flow_home, env, tmp_path, "config", "get", "x")
    assert (r.returncode, r.stdout) == (0, "1\n")


def test_a_flow_home_below_a_file(run_flow, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    home = blocker / "flow"
    r = run_flow("config", "set", "x", "1", env={"FLOW_HOME": str(home)})
    assert r.returncode == 2
    assert one_line(r) == (f"flow: error: cannot write to flow's home {home} (Not a directory). "
                           "Make it writable, or move it: set FLOW_HOME to a writable directory")
    r = run_flow("--help", env={"FLOW_HOME": str(home)})
    assert r.returncode == 0 and r.stderr == "" and "Commands:" in r.stdout


def _uv_used() -> bool:
    from flowcore.packages.installer import find_uv

    return bool(find_uv())


@pytest.mark.skipif(not _uv_used(), reason="flow installs with pip here: no uv cache")
def test_an_unwritable_uv_cache_on_plugin_add(run_flow, flow_home: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cache = blocker / "uv"
    r = run_flow("plugin", "add", str(ENV_PLUGIN), "--no-index",
                 env={"UV_CACHE_DIR": str(cache)})
    assert r.returncode == 2
    line = one_line(r)
    assert line.endswith(f"uv cannot write its cache {cache}. Make it writable, or move it: "
                         "set UV_CACHE_DIR to a writable directory"), line
    assert "cannot install" in line or "cannot create the flow environment" in line


@pytest.mark.skipif(not _uv_used(), reason="flow installs with pip here: no uv cache")
def test_a_read_only_uv_cache_on_plugin_add(read_only_ok, run_flow, flow_home: Path,
                                            tmp_path: Path) -> None:
    cache = tmp_path / "uv-cache-ro"
    cache.mkdir()
    env = offline_env(flow_home, UV_CACHE_DIR=str(cache))
    r = flow_read_only(cache, env, tmp_path, "plugin", "add", str(ENV_PLUGIN), "--no-index")
    assert r.returncode == 2, r.stderr
    assert one_line(r).endswith(f"uv cannot write its cache {cache}. Make it writable, or "
                                "move it: set UV_CACHE_DIR to a writable directory")
    assert not os.path.exists(flow_home / "config.json") or "flow-plugin-env" not in (
        flow_home / "config.json").read_text()
