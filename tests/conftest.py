"""Shared fixtures: a temporary FLOW_HOME, a `flow` runner, and an offline wheelhouse.

Every subprocess runs with the machine's pip/uv configuration switched off (offline.py), so that
an install that passes here would pass with no network and no index. Test modules never import
fixtures: pytest finds them here (seen by the tests of this folder only); helpers (``offline``,
``packages_support``, ...) are plain modules they import. tests/tiers.py is a plugin (below).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from offline import FLOW, offline_env
from package_index import build_repo_wheels

# the test tiers (unit, cli, cloud, redis, browser) and the session resources shared by the
# pytest-xdist workers
pytest_plugins = ["tiers"]


@pytest.fixture
def flow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "flowhome"
    monkeypatch.setenv("FLOW_HOME", str(home))
    return home


@pytest.fixture
def run_flow(flow_home: Path, tmp_path: Path):
    """Run the real `flow` CLI in a subprocess: run_flow(*args, cwd=..., env={...}, input=...)."""

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*FLOW, *args],
            cwd=cwd or tmp_path,
            env=offline_env(flow_home, **(env or {})),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of every kit and plugin in this repo, built once per test run (for all the xdist
    workers), offline. Tests only read it."""
    from tiers import shared_dir  # the plugin registered above (imported here: not before pytest rewrites it)

    return shared_dir(tmp_path_factory, "wheelhouse", build_repo_wheels)


@pytest.fixture(scope="session")
def package_index(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory):
    """This repo's kits and plugins as a PEP 503 simple index on loopback, for the session.

    ``package_index.url`` is the index URL; a run that installs from it needs
    ``env=INDEX_ENV`` (package_index.py: uv refuses even loopback under UV_OFFLINE=1).
    """
    from package_index import start_package_index

    index = start_package_index(wheelhouse, tmp_path_factory.mktemp("package-index"))
    yield index
    index.stop()
