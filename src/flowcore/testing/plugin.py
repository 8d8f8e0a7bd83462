"""flowcore's pytest plugin: the fixtures a kit or plugin author gets by installing flowcore.

Registered as the ``pytest11`` entry point ``flowcore`` (pyproject.toml), so pytest loads it in
every session of an environment that has flowcore; ``-p no:flowcore`` turns it off. Fixtures:

* ``flow_home``: a temporary ``FLOW_HOME`` (a fresh folder per test, outside ``tmp_path``), also
  set in this process's environment for the test, so code run in-process sees it too;
* ``flow``: a :class:`flowcore.testing.FlowRunner` bound to ``flow_home``, starting in
  ``tmp_path``; wheels it builds and uv's cache are shared by the session's tests;
* ``make_project``: ``make_project(path="project", *, kit=None, plugins=(), settings=None,
  files=None, name=None, trust=False)``, :func:`flowcore.testing.make_project` under ``tmp_path`` (a relative
  ``path``) that trusts the project with ``flow`` when asked.

Only pytest is imported here at start; flowcore.testing is imported when a fixture is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flowcore.testing import FlowRunner

MakeProject = Callable[..., Path]


@pytest.fixture(scope="session")
def _flowcore_session_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The session's wheelhouse and uv cache (per pytest-xdist worker)."""
    root = tmp_path_factory.mktemp("flowcore-testing")
    return root / "wheels", root / "uv-cache"


@pytest.fixture
def flow_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary FLOW_HOME, empty, set as ``FLOW_HOME`` in this process for the test."""
    home = tmp_path_factory.mktemp("flow-home") / "flowhome"
    monkeypatch.setenv("FLOW_HOME", str(home))
    return home


@pytest.fixture
def flow(flow_home: Path, tmp_path: Path, _flowcore_session_dirs: tuple[Path, Path]) -> FlowRunner:
    """``flow`` bound to ``flow_home``: ``flow.run(...)``, ``flow.install_kit(path)``, ..."""
    from flowcore.testing import FlowRunner

    wheels, cache = _flowcore_session_dirs
    return FlowRunner(flow_home, cwd=tmp_path, wheelhouse=wheels, cache=cache)


@pytest.fixture
def make_project(tmp_path: Path, flow: FlowRunner) -> MakeProject:
    """Make a flow project (relative paths under ``tmp_path``); ``trust=True`` trusts it."""
    from flowcore import testing

    def make(path: str | os.PathLike[str] = "project", *, kit: str | None = None,
             plugins: Sequence[str] = (), settings: Mapping[str, Mapping[str, object]] | None = None,
             files: Mapping[str, str | bytes] | None = None, name: str | None = None,
             trust: bool = False) -> Path:
        project = testing.make_project(tmp_path / path, kit=kit, plugins=plugins, settings=settings,
                                       files=files, name=name)
        if trust:
            flow.trust(project)
        return project

    return make
