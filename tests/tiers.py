"""The test tiers, and how the tests share a machine with pytest-xdist (a pytest plugin: both
tests/conftest.py and kits/flow-kit-cloudbuild/tests/conftest.py register it).

Each test gets one tier marker (registered in pyproject.toml; run one tier with ``-m unit``):

* ``unit``: in-process tests of tests/ (no subprocess, no environment built);
* ``cli``: tests of tests/ that run the real ``flow`` (``run_flow``), build wheels or managed
  environments, or start other processes;
* ``cloud``: the cloud-build kit's tests (a real server, git daemon, sandbox, ``flow publish``);
* ``redis``: the kit's Redis-mode tests (a real ``redis-server``);
* ``browser``: the kit's dashboard and dev-server tests that drive Chromium.

A module may set its tier itself (``pytestmark = pytest.mark.cli``); otherwise it follows from
where the test lives and the fixtures it uses (``item.fixturenames``: the transitive closure).

pytest-xdist (``-n`` in pyproject's addopts, ``--dist loadfile``): a test module's tests run on
one worker, so a module-scoped fixture (a build server, a git daemon, a flow environment with the
kit installed) is set up once; each worker runs the longer tiers first. Session fixtures run once
per worker; the ones that build files (``shared_dir``) build them once for the whole run, under
a lock. (``--dist loadgroup`` with an ``xdist_group`` per module would balance finer, but under
pytest 9 it needs xdist to rename node ids through pytest's private attributes.)
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

TIERS = ("unit", "cli", "cloud", "redis", "browser")
FIRST = ("redis", "browser", "cloud", "cli", "unit")  # the order an xdist worker runs them in
KIT_TESTS = Path(__file__).resolve().parent.parent / "kits" / "flow-kit-cloudbuild" / "tests"
# fixtures (anywhere in a test's closure) that make a test of tests/ a cli one
CLI_FIXTURES = {"run_flow", "wheelhouse", "package_index", "flow", "make_project"}  # flowcore.testing's too
# names in a test module's globals that make its tests cli ones: they start processes
CLI_NAMES = ("subprocess", "FLOW", "ManagedEnv", "make_env", "pty")
BROWSER_FIXTURES = {"browser", "tab"}
REDIS_FIXTURES = {"redis_server"}


def pytest_configure(config: pytest.Config) -> None:
    """Register the tiers where pyproject.toml's markers are not read: a run whose rootdir is
    kits/flow-kit-cloudbuild (its own [tool.pytest.ini_options]), e.g. ``pytest kits/.../test_x.py``."""
    known = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for tier in TIERS:
        if tier not in known:
            config.addinivalue_line("markers", f"{tier}: a test tier (pyproject.toml, tests/tiers.py)")


def tier_of(item: pytest.Item) -> str:
    path = Path(str(item.path)).resolve()
    fixtures = set(getattr(item, "fixturenames", ()))
    if KIT_TESTS in path.parents:
        if fixtures & BROWSER_FIXTURES:
            return "browser"
        if "redis" in path.stem or fixtures & REDIS_FIXTURES:
            return "redis"
        return "cloud"
    module = getattr(item, "module", None)
    if fixtures & CLI_FIXTURES or any(hasattr(module, name) for name in CLI_NAMES):
        return "cli"
    return "unit"


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):
    # before every other implementation (-m deselects by these markers, xdist reads the groups)
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(tier_of(item))
    if hasattr(config, "workerinput"):  # an xdist worker: the longest tiers first, so that
        # the last tests to start are short ones and no worker is left with a long tail
        items.sort(key=lambda item: FIRST.index(next(m.name for m in item.iter_markers() if m.name in TIERS)))
    return (yield)


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A directory ``build`` fills once per test run: under pytest-xdist, the first worker builds
    it (under a lock, into a temporary name, then renamed) and the others reuse it read-only;
    without xdist, a fresh ``tmp_path_factory`` directory."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        dest = tmp_path_factory.mktemp(name)
        build(dest)
        return dest
    root = tmp_path_factory.getbasetemp().parent  # one per run, shared by its workers
    dest = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not dest.is_dir():
            partial = root / f"{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            build(partial)
            partial.rename(dest)
    return dest
