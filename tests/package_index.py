"""A real PEP 503 simple package index on loopback, for tests and the docs tests.

``start_package_index(wheels)`` lays the wheels of a directory out as a simple index
(``<root>/simple/index.html`` listing every project, ``<root>/simple/<normalized-name>/index.html``
linking its files with a ``#sha256=`` fragment, the files next to it), serves it with
``http.server`` in a daemon thread on 127.0.0.1, and returns a ``PackageIndex`` whose ``url``
(``http://127.0.0.1:PORT/simple/``) pip and uv take as ``--index-url`` (and flow as
``FLOW_INDEX_URL`` or ``flow config set indexUrl URL``). Call ``stop()`` when done, or use it as a
context manager.

The ``package_index`` fixture (tests/conftest.py) serves this repo's kits and plugins (the
``wheelhouse`` fixture) for the whole session; outside fixtures (tests/test_docs.py),
``start_repo_index(workdir)`` builds and serves them, and ``index_env(index)`` is what a `flow`
run needs in its environment to install from it (``FLOW_INDEX_URL`` and ``UV_OFFLINE=0``).

uv refuses the network under ``UV_OFFLINE=1`` (loopback included), which every test's
environment sets: a run that uses the index passes ``UV_OFFLINE="0"`` (``INDEX_ENV``).
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: What a `flow` run that installs from the loopback index needs in its environment.
INDEX_ENV = {"UV_OFFLINE": "0", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

_DIST_RE = re.compile(r"^(?P<name>.+?)-\d[^-]*(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$|"
                      r"^(?P<sname>.+?)-\d[^-]*\.(tar\.gz|zip)$")


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _project_of(filename: str) -> str | None:
    m = _DIST_RE.match(filename)
    if not m:
        return None
    return normalize(m.group("name") or m.group("sname"))


def _page(title: str, links: list[tuple[str, str]]) -> str:
    body = "\n".join(f'    <a href="{html.escape(href)}">{html.escape(text)}</a><br/>'
                     for href, text in links)
    return (f"<!DOCTYPE html>\n<html>\n  <head><meta name=\"pypi:repository-version\" "
            f"content=\"1.0\"><title>{html.escape(title)}</title></head>\n  <body>\n{body}\n"
            "  </body>\n</html>\n")


def build_simple_index(wheels: Path, root: Path) -> Path:
    """Write ``root/simple/`` for every wheel and sdist in ``wheels``; returns ``root/simple``."""
    simple = root / "simple"
    projects: dict[str, list[Path]] = {}
    for f in sorted(wheels.iterdir()):
        project = _project_of(f.name) if f.is_file() else None
        if project:
            projects.setdefault(project, []).append(f)
    for project, files in projects.items():
        folder = simple / project
        folder.mkdir(parents=True, exist_ok=True)
        links = []
        for f in files:
            shutil.copy2(f, folder / f.name)
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            links.append((f"{f.name}#sha256={digest}", f.name))
        (folder / "index.html").write_text(_page(f"Links for {project}", links), encoding="utf-8")
    simple.mkdir(parents=True, exist_ok=True)
    (simple / "index.html").write_text(
        _page("Simple index", [(f"{p}/", p) for p in sorted(projects)]), encoding="utf-8")
    return simple


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        pass


class PackageIndex:
    """A simple index served on 127.0.0.1 from a thread; ``url`` ends with ``/simple/``."""

    def __init__(self, wheels: Path, root: Path | None = None) -> None:
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="flow-index-")
        self.root = Path(root if root is not None else self._tmp.name)
        self.simple = build_simple_index(wheels, self.root)
        handler = partial(_QuietHandler, directory=str(self.root))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/simple/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="flow-test-package-index")
        self._thread.start()

    def add(self, *files: Path) -> None:
        """Publish more distributions (e.g. a new version) on the running index."""
        staging = Path(tempfile.mkdtemp(prefix="flow-index-add-"))
        try:
            for f in files:
                shutil.copy2(f, staging / f.name)
            for existing in self.simple.glob("*/*"):
                if existing.name != "index.html":
                    shutil.copy2(existing, staging / existing.name)
            build_simple_index(staging, self.root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> PackageIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_package_index(wheels: Path, root: Path | None = None) -> PackageIndex:
    """Serve ``wheels`` as a PEP 503 simple index on loopback; ``.url`` is the index URL."""
    return PackageIndex(wheels, root)


def build_repo_wheels(dest: Path) -> None:
    """Build every kit and plugin of this repo into wheels in ``dest``, offline."""
    repo = Path(__file__).resolve().parent.parent
    for parent in ("kits", "plugins"):
        for project in sorted((repo / parent).glob("*/pyproject.toml")):
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--no-index", "-q", "-w", str(dest), str(project.parent)],
                check=True,
                env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
            )


def start_repo_index(workdir: Path, wheels: Path | None = None) -> PackageIndex:
    """This repo's kits and plugins (built into ``workdir/wheels`` unless ``wheels`` holds them
    already, e.g. the ``wheelhouse`` fixture) served as a simple index under ``workdir``.

    For tests/test_docs.py: ``env.update(index_env(start_repo_index(tmp_path)))`` makes the
    documents' ``flow buildkit add flow-kit-python`` / ``flow plugin add flow-plugin-env``
    install by name, as they do for a reader whose flow points at an index that has them.
    """
    if wheels is None:
        wheels = workdir / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        build_repo_wheels(wheels)
    return PackageIndex(wheels, workdir / "index")


def index_env(index: PackageIndex) -> dict[str, str]:
    """Environment variables that point `flow` at ``index`` (and let uv reach loopback)."""
    return {**INDEX_ENV, "FLOW_INDEX_URL": index.url}
