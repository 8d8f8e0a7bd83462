"""The cloud-build tests' fixtures. Test modules name them as arguments and never import them;
the parts they are made of (``ServerProc``, ``GitDaemon``, ``BuildServer``, ``make_site``, ...)
live in the ``cloudbuild_*_support`` modules, which tests import as plain helpers.

Defined here rather than registered as plugins: a conftest's fixtures are seen only by the tests
below it, so generic names (``flow``, ``server``, ``client``) do not shadow, for tests/, the
fixtures of the same name that other plugins offer (flowcore.testing's ``flow``).

The publish tests' build server is ``publish_server`` (the kit installed into ``flow``'s
environment): a publish test module names it ``server`` with a one-line fixture of its own.
tests/tiers.py (the tier markers, the xdist grouping) is registered as for tests/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import repo_tests  # noqa: F401  (puts tests/ and the kit's src/ on sys.path, for a run of this folder alone)
from cloudbuild_publish_support import KIT_DIR, BuildServer, Flow, GitHost
from cloudbuild_redis_support import RedisServer
from cloudbuild_server_support import CHROMIUM, Client, GitDaemon, ServerProc
from seaweed_support import SeaweedFS

pytest_plugins = ["tiers"]


# -- the server tests: a server and a git daemon per module --------------------------------------
@pytest.fixture(scope="module")
def git_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitDaemon]:
    d = GitDaemon(tmp_path_factory.mktemp("githost"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path_factory.mktemp("server") / "data", "--concurrency", "4",
                   config={"checks": [], "freeze-windows": []}).start()
    yield s
    s.stop()


@pytest.fixture
def client(server: ServerProc) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


# -- the publish tests: the kit installed by flow, its server, a git host -------------------------
@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Flow:
    home = tmp_path_factory.mktemp("publish") / "flowhome"
    runner = Flow(home)
    result = runner("buildkit", "add", str(KIT_DIR), "--no-index", cwd=home.parent)
    assert result.returncode == 0, result.stderr
    return runner


@pytest.fixture(scope="module")
def publish_server(flow: Flow, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildServer]:
    """The build server the kit installed into ``flow``'s environment."""
    executable = flow.home / "env" / "bin" / "flow-cloudbuild-server"
    assert executable.exists(), "flow buildkit add did not install flow-cloudbuild-server"
    srv = BuildServer(executable, tmp_path_factory.mktemp("server") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def git_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHost]:
    host = GitHost(tmp_path_factory.mktemp("githost"))
    yield host
    host.stop()


# -- the Redis-mode tests ------------------------------------------------------------------------
@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for one test."""
    r = RedisServer(tmp_path / "redis").start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real S3-compatible server (SeaweedFS) on free loopback ports for the whole run (~5 s to start)."""
    s = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield s
    s.stop()


# -- the browser tests: one Chromium per module ---------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium through Playwright (skipped without Playwright; the modules that use it also skip
    without CHROMIUM, their ``pytestmark``). Imported here, not at the top: only these tests need it."""
    pw = pytest.importorskip("playwright.sync_api")
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()
