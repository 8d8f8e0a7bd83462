"""The public testing API of flowcore: test a build kit or plugin the way its users run it.

Everything here is for third-party kit and plugin authors (and this repository's own kits and
plugins, whose tests use only :mod:`flowcore.api` and this module). Every other module of
flowcore is private; a test pins ``__all__``.

What there is, and why:

* :class:`FlowRunner`: ``flow`` bound to a temporary ``FLOW_HOME``. :meth:`FlowRunner.run` runs
  the real CLI in a subprocess (``python -m flowcore``, as users run ``flow``: plugin loading,
  dispatch, the one-line errors and the exit codes included) with an environment it sets
  explicitly: ``FLOW_HOME`` and ``HOME`` are temporary folders (``~/.flow`` is never touched), pip's
  and uv's configuration is off and uv is offline, so a test passes or fails the same on any
  machine and never reaches the network.
* :meth:`FlowRunner.install_kit` / :meth:`FlowRunner.install_plugin`: install a source directory
  or a wheel through the real ``flow buildkit add`` / ``flow plugin add``, offline. A directory
  is built into a wheel once per runner and source state (``uv build --no-build-isolation``: its
  build backend, e.g. hatchling, must be installed in the test environment), then installed
  with ``--no-index --find-links`` to every wheel built so far, so a plugin that depends on a kit
  built by the same test finds it.
* :meth:`FlowRunner.invoke`: one click command of your own package run in-process with click's
  ``CliRunner`` and a real core instance (``Flow``) of the temporary home as its ``obj``; what
  :func:`flowcore.api.current` returns works as in a run. Nothing is installed or loaded: no
  dispatch, no hooks around the command, and a ``FlowError`` stays an exception
  (``Result.exception``) instead of becoming ``flow: error:`` on stderr. Use it for fast tests
  of a command's own logic; use :meth:`FlowRunner.run` for what users see.
* :func:`make_project`: a folder with a ``pyproject.toml`` declaring ``[tool.flow]`` (a kit,
  plugins) and any other files; :meth:`FlowRunner.trust` trusts it (``flow trust``), which a
  project's own plugins and ``flow plugin add`` inside it need.
* :class:`Result`: exit code, stdout, stderr of one run.
* :class:`SetupError`: a test's setup cannot work as written (a path that is not a kit, a build
  that fails); its message names the cause and the fix.

With pytest, installing flowcore gives the fixtures of :mod:`flowcore.testing.plugin` (a
``pytest11`` entry point): ``flow_home``, ``flow`` (a :class:`FlowRunner`) and ``make_project``.
docs/writing-plugins.md ("Testing your plugin or kit") shows them at work.

Importing this module is cheap (no click, no pluggy, no subprocess until a run): pytest imports
the plugin module of every installed ``pytest11`` entry point at start.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import click

__all__ = [
    "FlowRunner",
    "Result",
    "SetupError",
    "make_project",
]

#: Folders never part of a source tree's fingerprint (caches, builds, environments, VCS).
_NOT_SOURCE = {"__pycache__", "build", "dist", "node_modules", ".git", ".venv", ".flow", ".tox",
               ".nox", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


class SetupError(Exception):
    """A test's setup cannot work as written; the message is ``<cause>. <fix>``."""

    def __init__(self, cause: str, fix: str) -> None:
        self.cause = cause.rstrip(".")
        self.fix = fix
        super().__init__(f"{self.cause}. {fix}")


class Result(NamedTuple):  # a NamedTuple: ~5x cheaper to define than a dataclass (see above)
    """What one run gave: ``exit_code``, ``output`` (stdout), ``stderr``.

    ``args`` is the command line after ``flow``; ``exception`` is the exception an in-process
    :meth:`FlowRunner.invoke` ended with (``None`` for a subprocess run, where flow turned it into
    its exit code and one line on stderr).
    """

    exit_code: int
    output: str
    stderr: str
    args: tuple[str, ...] = ()
    exception: BaseException | None = None

    def __str__(self) -> str:
        """The whole run, for an assertion message (``assert r.exit_code == 0, r``)."""
        return (f"flow {' '.join(self.args)} exited with {self.exit_code}\n--- stdout\n{self.output}"
                f"--- stderr\n{self.stderr}")


class FlowRunner:
    """``flow`` bound to one ``FLOW_HOME``: run it, install kits and plugins into it.

    ``home``: the ``FLOW_HOME`` (created on first use by flow). ``cwd``: where runs start unless
    told. ``env``: variables added to every run's environment (after the defaults, so they may
    override them). ``wheelhouse``: where built wheels go (default: next to ``home``), shared by
    runners that should reuse builds; ``cache``: uv's cache (default: next to ``home``).
    """

    def __init__(self, home: str | os.PathLike[str], *, cwd: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None,
                 wheelhouse: str | os.PathLike[str] | None = None,
                 cache: str | os.PathLike[str] | None = None, timeout: float = 300) -> None:
        self.home = Path(home).absolute()
        self.cwd = Path(cwd).absolute() if cwd is not None else self.home.parent
        self.wheelhouse = (Path(wheelhouse) if wheelhouse is not None
                           else self.home.parent / f"{self.home.name}-wheels").absolute()
        self.cache = (Path(cache) if cache is not None
                      else self.home.parent / f"{self.home.name}-uv-cache").absolute()
        self.timeout = timeout
        self._extra = dict(env or {})
        self._built: dict[Path, tuple[str, Path]] = {}

    # ------------------------------------------------------------------ the environment

    @property
    def user_home(self) -> Path:
        """The ``HOME`` runs see: an empty folder next to ``home``, so ``~`` is never the user's."""
        return self.home.parent / f"{self.home.name}-user"

    @property
    def env(self) -> dict[str, str]:
        """Every variable a subprocess run sees (a copy): built here, not inherited, except
        ``PATH`` (the tools a kit runs: git, node, ...), ``TMPDIR`` and ``SYSTEMROOT``."""
        env = {k: os.environ[k] for k in ("PATH", "TMPDIR", "SYSTEMROOT") if k in os.environ}
        env.update(
            FLOW_HOME=str(self.home),
            HOME=str(self.user_home),
            USERPROFILE=str(self.user_home),
            LANG="C.UTF-8",
            PYTHONUTF8="1",
            PYTHONDONTWRITEBYTECODE="1",
            PIP_CONFIG_FILE=os.devnull,  # the machine's pip configuration (indexes, find-links)
            PIP_NO_INPUT="1",
            UV_NO_CONFIG="1",            # ... and uv's
            UV_OFFLINE="1",              # no network, loopback included
            UV_CACHE_DIR=str(self.cache),
            CI="true",                   # no update check, no prompts
            NO_COLOR="1",
            COLUMNS="200",
        )
        env.update(self._extra)
        return env

    # ------------------------------------------------------------------ running flow

    def run(self, *args: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None,
            input: str | None = None, env: Mapping[str, str] | None = None,  # noqa: A002
            timeout: float | None = None) -> Result:
        """Run ``flow ARGS...`` in a subprocess, in ``cwd`` (default: the runner's), and return
        its exit code and output. ``env`` adds variables to this run's environment."""
        import subprocess

        words = tuple(os.fspath(a) for a in args)
        self.user_home.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "flowcore", *words],
            cwd=Path(cwd) if cwd is not None else self.cwd,
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout if timeout is not None else self.timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr, words)

    def invoke(self, command: click.Command, *args: str | os.PathLike[str],
               cwd: str | os.PathLike[str] | None = None, input: str | None = None,  # noqa: A002
               env: Mapping[str, str] | None = None) -> Result:
        """Run one click ``command`` in this process with a real core instance as its ``obj``
        (see the module docs for what this does not do), in ``cwd`` with ``FLOW_HOME`` set."""
        import contextlib

        from click.testing import CliRunner

        from flowcore.cli.app import Flow
        from flowcore.config import RunOptions

        where = Path(cwd) if cwd is not None else self.cwd
        words = [os.fspath(a) for a in args]
        runner = CliRunner()
        with contextlib.chdir(where):
            result = runner.invoke(command, words, obj=Flow(RunOptions(), cwd=where), input=input,
                                   env={"FLOW_HOME": str(self.home), **(env or {})})
        return Result(result.exit_code, result.stdout, result.stderr, tuple(words), result.exception)

    # ------------------------------------------------------------------ installing

    def install_kit(self, path: str | os.PathLike[str], *,
                    find_links: Iterable[str | os.PathLike[str]] = ()) -> Result:
        """Install the kit at ``path`` (a source directory or a wheel) with ``flow buildkit add``,
        offline; the first kit installed becomes the active one. Raises :class:`SetupError` when
        the install fails (to test a failing install, ``run("buildkit", "add", ...)``)."""
        return self._install("buildkit", path, find_links, None)

    def install_plugin(self, path: str | os.PathLike[str], *,
                       cwd: str | os.PathLike[str] | None = None,
                       find_links: Iterable[str | os.PathLike[str]] = ()) -> Result:
        """Install the plugin at ``path`` (a source directory or a wheel) with ``flow plugin add``,
        offline: globally (bound to the kits its ``FLOW_BUILD_KITS`` names), or into the project
        at ``cwd`` (which must be trusted: :meth:`trust`). Raises :class:`SetupError` on failure."""
        return self._install("plugin", path, find_links, cwd)

    def trust(self, project: str | os.PathLike[str]) -> Result:
        """Trust ``project`` (``flow trust DIR``): its own plugins load, and plugins can be
        installed into it. Raises :class:`SetupError` when flow refuses."""
        result = self.run("trust", os.fspath(Path(project).absolute()))
        if result.exit_code != 0:
            raise SetupError(f"flow trust {project} failed: {_last_line(result.stderr)}",
                             "Pass a folder holding a flow project (make_project makes one)")
        return result

    def _install(self, group: str, path: str | os.PathLike[str],
                 find_links: Iterable[str | os.PathLike[str]], cwd: str | os.PathLike[str] | None
                 ) -> Result:
        what = "build kit" if group == "buildkit" else "plugin"
        wheel = self.build_wheel(path, what=what)
        links = [str(self.wheelhouse), *(os.fspath(Path(f).absolute()) for f in find_links)]
        if wheel.parent != self.wheelhouse:
            links.append(str(wheel.parent))
        args = [group, "add", str(wheel), "--no-index"]
        for link in links:
            args += ["--find-links", link]
        result = self.run(*args, cwd=cwd)
        if result.exit_code != 0:
            raise SetupError(f"flow {group} add {path} failed: {_last_line(result.stderr)}",
                             f"Check that {path} is a flow {what} whose dependencies are installed in "
                             "the test environment or given with find_links")
        return result

    def build_wheel(self, path: str | os.PathLike[str], *, what: str = "package") -> Path:
        """The wheel of ``path``: a ``.whl`` as it is, a source directory built (offline, without
        build isolation) into :attr:`wheelhouse`, again only when its files changed."""
        source = Path(path).expanduser().absolute()
        if source.is_file() and source.suffix == ".whl":
            return source
        if not source.is_dir():
            raise SetupError(f"cannot install {path}: no such directory or wheel file",
                             f"Pass the source directory of a {what} (with its pyproject.toml) or a "
                             ".whl file")
        if not (source / "pyproject.toml").is_file() and not (source / "setup.py").is_file():
            raise SetupError(f"cannot install {path}: it has no pyproject.toml",
                             f"Pass the source directory of a {what} (the folder holding its "
                             "pyproject.toml) or a .whl file")
        stamp = _fingerprint(source)
        built = self._built.get(source)
        if built is not None and built[0] == stamp and built[1].is_file():
            return built[1]
        wheel = self._uv_build(source, what)
        self._built[source] = (stamp, wheel)
        return wheel

    def _uv_build(self, source: Path, what: str) -> Path:
        import subprocess
        import tempfile

        from flowcore.api import uv_binary

        self.wheelhouse.mkdir(parents=True, exist_ok=True)
        uv = uv_binary()
        with tempfile.TemporaryDirectory(dir=self.wheelhouse, prefix=".build-") as out:
            # uv (a dependency of flowcore) builds in a third of pip's time; pip when it is absent
            cmd = ([uv, "build", "--wheel", "--no-build-isolation", "--python", sys.executable,
                    "--offline", "--quiet", "--out-dir", out, str(source)] if uv is not None else
                   [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "--quiet", "--wheel-dir", out, str(source)])
            proc = subprocess.run(cmd, env={**self.env, "UV_OFFLINE": "1"}, capture_output=True,
                                  text=True, timeout=self.timeout)
            wheels = sorted(Path(out).glob("*.whl"))
            if proc.returncode != 0 or len(wheels) != 1:
                raise SetupError(
                    f"building {source} failed: {_last_line(proc.stderr or proc.stdout)}",
                    "The build runs offline without isolation: install its build backend (e.g. "
                    "hatchling) in the test environment")
            wheel = self.wheelhouse / wheels[0].name
            os.replace(wheels[0], wheel)  # a rebuild replaces the old one: one version per name
        return wheel


def make_project(root: str | os.PathLike[str], *, kit: str | None = None,
                 plugins: Sequence[str] = (),
                 settings: Mapping[str, Mapping[str, object]] | None = None,
                 files: Mapping[str, str | bytes] | None = None,
                 name: str | None = None) -> Path:
    """Make a flow project at ``root`` and return its path.

    Writes ``pyproject.toml`` with ``[project]`` (``name``, default the folder's name),
    ``[tool.flow]`` (``buildkit = kit``, ``plugins``) and one ``[tool.flow.<short name>]`` table
    per entry of ``settings`` (a kit's or a plugin's section, e.g. ``{"python": {"test-args":
    ["-q"]}}``), then ``files`` (relative path -> text or bytes; folders are created). A
    ``pyproject.toml`` in ``files`` replaces the generated one, so it cannot be combined with
    ``kit``, ``plugins`` or ``settings``. Trusting it is the runner's: :meth:`FlowRunner.trust`.
    """
    project = Path(root).absolute()
    files = dict(files or {})
    if "pyproject.toml" in files and (kit is not None or plugins or settings):
        raise SetupError("make_project got both a pyproject.toml in files and kit/plugins/settings",
                         "Declare [tool.flow] in the pyproject.toml you pass, or drop it from files")
    project.mkdir(parents=True, exist_ok=True)
    if "pyproject.toml" not in files:
        import tomlkit  # a dependency of flowcore (style-preserving config edits)

        flow: dict[str, object] = {}
        if kit is not None:
            flow["buildkit"] = kit
        flow["plugins"] = list(plugins)
        flow.update({short: dict(section) for short, section in (settings or {}).items()})
        files["pyproject.toml"] = tomlkit.dumps(
            {"project": {"name": name or project.name, "version": "0.1.0"}, "tool": {"flow": flow}})
    for relative, content in files.items():
        target = project / relative
        if project not in Path(os.path.normpath(target)).parents:
            raise SetupError(f"make_project file {relative!r} is outside the project",
                             "Use a path relative to the project root")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    return project


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def _fingerprint(source: Path) -> str:
    """The state of a source tree (paths, sizes, modification times): a rebuild when it changes."""
    import hashlib

    digest = hashlib.sha256()
    for folder, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in _NOT_SOURCE and not d.endswith(".egg-info"))
        for name in sorted(names):
            st = os.stat(os.path.join(folder, name))
            digest.update(f"{os.path.relpath(os.path.join(folder, name), source)}\0{st.st_size}\0"
                          f"{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()
