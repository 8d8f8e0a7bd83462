"""Shared fixtures: a temporary FLOW_HOME, a `flow` runner, and an offline wheelhouse.

Every subprocess runs with the machine's pip/uv configuration switched off, so that an install
that passes here would pass with no network and no index.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FLOW = [sys.executable, "-m", "flowcore"]

_OFFLINE_DROP = ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL",
                 "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "FLOW_LOAD_PLUGINS", "FLOW_STRICT_PLUGINS",
                 "FLOW_DEBUG", "FLOW_NO_LOCAL", "FLOW_INDEX_URL", "FLOW_EXTRA_INDEX_URL",
                 "FLOW_FIND_LINKS")


def offline_env(flow_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OFFLINE_DROP}
    env.update(
        FLOW_HOME=str(flow_home),
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INPUT="1",
        UV_NO_CONFIG="1",
        UV_OFFLINE="1",
        UV_CACHE_DIR=str(flow_home.parent / "uv-cache"),
        CI="true",
        NO_COLOR="1",
        COLUMNS="200",
    )
    env.update(extra)
    return env


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


def _build_repo_wheels(dest: Path) -> None:
    for parent in ("kits", "plugins"):
        for project in sorted((REPO / parent).glob("*/pyproject.toml")):
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--no-index", "-q", "-w", str(dest), str(project.parent)],
                check=True,
                env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
            )


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of every kit and plugin in this repo, built once per test session, offline."""
    dest = tmp_path_factory.mktemp("wheelhouse")
    _build_repo_wheels(dest)
    return dest


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
