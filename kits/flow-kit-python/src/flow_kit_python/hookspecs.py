"""flow-kit-python's own hooks: what its kit-bound (and project) plugins can change in its commands.

This module is the reference for plugins of the Python kit (``docs/hooks-python.md`` is generated
from it and a test keeps the two in step). The kit declares these hooks through the core hook
``flow_addhooks`` when it loads, so they exist only in a run whose active kit is
``flow-kit-python``; a plugin bound to this kit (``FLOW_BUILD_KITS = ["flow-kit-python"]``)
implements them with ``@hookimpl`` (``from flowcore.api import hookimpl``) like any core hook.

How the kit calls them
----------------------

* Every hook receives ``context`` first: the implementing plugin's own context (a
  ``KitContext`` for a kit-bound or project plugin; its ``config.section`` is the plugin's
  ``[tool.flow.<short name>]`` table). An implementation may accept
  any subset of the arguments; the kit passes them by name.
* Results are combined in pluggy's order (the kit, then kit-bound or project plugins, then
  general plugins; ``tryfirst``/``trylast`` move one).
* A plugin refuses by raising ``flowcore.api.FlowError`` (a cause and a fix): it reaches the
  kit, and the command stops with that one-line error (each hook says when). Any other
  exception is a bug: reported in one line naming the plugin, the result left out, the command
  goes on (``--strict-plugins`` makes that an error).
* The payloads are the TypedDicts below, ``ExtraFile`` and ``BuiltArtifact``, importable from
  ``flow_kit_python.hookspecs``; import them under ``TYPE_CHECKING`` so that a plugin does not
  depend on the kit at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NotRequired, Protocol, TypedDict

from flowcore.api import CoreContext, hookspec


class ExtraFile(TypedDict):
    """A file a plugin adds to what ``flow build`` builds (a result of
    ``flow_python_before_build``)."""

    #: Where the file goes in the wheel, a relative POSIX path, e.g. ``"demo/_build_info.py"``.
    #: Its first folder must be one the wheel has (a package of the project).
    path: str
    #: The file's text (written as UTF-8).
    content: str
    #: Where the file goes in the sdist, relative to the project root, e.g.
    #: ``"src/demo/_build_info.py"``, so that a wheel built later from the sdist has it too.
    #: Left out: the sdist is not changed.
    source: NotRequired[str]


class BuiltArtifact(TypedDict):
    """One file ``flow build`` wrote (an item of ``flow_python_built``'s ``artifacts``)."""

    #: The file's absolute path.
    path: Path
    #: ``"wheel"`` or ``"sdist"``.
    kind: Literal["wheel", "sdist"]
    #: Hex SHA-256 of the file as written, after the plugins' extra files were added.
    sha256: str


class PythonHooks(Protocol):
    """The kit's hooks as ``context.hook`` calls them (``cast(PythonHooks, context.hook)``):
    keyword arguments only, each returns the implementations' non-``None`` results in order."""

    def flow_python_before_build(self, *, project: Path, outdir: Path,
                                 targets: list[str]) -> list[list[ExtraFile]]: ...

    def flow_python_built(self, *, project: Path, artifacts: list[BuiltArtifact]) -> list[None]: ...

    def flow_python_test_args(self, *, project: Path, args: list[str]) -> list[list[str]]: ...

    def flow_python_test_result(self, *, project: Path, exit_code: int,
                                duration: float) -> list[None]: ...


# ---------------------------------------------------------------------------------------------
# flow build
# ---------------------------------------------------------------------------------------------


@hookspec
def flow_python_before_build(context: CoreContext, project: Path, outdir: Path,
                             targets: list[str]) -> list[ExtraFile] | None:
    """Add files to the distributions ``flow build`` is about to build.

    When: once per build (each rebuild of ``flow build --watch``), after the kit's settings were
    read and before the build backend runs.

    :param context: this plugin's context.
    :param project: the project's root directory. Read it; a plugin that writes into it leaves
        the user's tree changed (and wakes ``--watch``): return files instead.
    :param outdir: the directory the sdist and wheel are written to.
    :param targets: what is built, in order: ``["sdist", "wheel"]``.

    Return: a list of ``ExtraFile`` (``path`` in the wheel, ``content``, optionally ``source``:
    the path in the sdist, relative to the project root), or ``None``. The kit adds every file
    to the wheel after the backend built it (with its line in the wheel's ``RECORD``) and, when
    ``source`` is given, to the sdist. A path the wheel (or sdist) already has, one that two
    plugins add, or a folder the wheel does not have fails the build naming the file. A
    ``FlowError`` stops the build before the backend runs.
    """


@hookspec
def flow_python_built(context: CoreContext, project: Path, artifacts: list[BuiltArtifact]) -> None:
    """Told what ``flow build`` wrote: to record, sign, copy or upload it.

    When: after a successful build, once the plugins' extra files were added, before ``flow
    build`` prints the ``built ...`` lines. Not called when the build failed.

    :param context: this plugin's context.
    :param project: the project's root directory.
    :param artifacts: one ``BuiltArtifact`` per file written, in the order of the ``built``
        lines (by file name): ``path``, ``kind`` (``"wheel"`` or ``"sdist"``) and ``sha256`` of
        the final file.

    Return: ignored. A ``FlowError`` fails ``flow build`` with its message (the files stay
    written); any other exception is reported and the plugin skipped.
    """


# ---------------------------------------------------------------------------------------------
# flow test
# ---------------------------------------------------------------------------------------------


@hookspec
def flow_python_test_args(context: CoreContext, project: Path, args: list[str]) -> list[str] | None:
    """Add arguments to the pytest command line of ``flow test``.

    When: once per ``flow test`` (also with ``--watch``), after the test environment is ready and
    before pytest starts.

    :param context: this plugin's context.
    :param project: the project's root directory (pytest's working directory).
    :param args: the arguments pytest gets so far: the kit's ``test-args`` then the command
        line's. Read it; do not change it.

    Return: a list of strings, or ``None``. The lists of all plugins are concatenated in order
    and placed after ``test-args`` and before the command line's arguments, so what the user
    typed comes last. A ``FlowError`` stops ``flow test`` before pytest starts.
    """


@hookspec
def flow_python_test_result(context: CoreContext, project: Path, exit_code: int,
                            duration: float) -> None:
    """Told how a pytest run of ``flow test`` ended.

    When: after pytest exited, before ``flow test`` exits with its code; with ``--watch``, after
    every run.

    :param context: this plugin's context.
    :param project: the project's root directory.
    :param exit_code: pytest's exit code (0 passed, 1 failed tests, 5 no tests collected, ...).
    :param duration: wall-clock seconds pytest ran, as a float.

    Return: ignored. A ``FlowError`` makes ``flow test`` fail with its message (exit 1); any
    other exception is reported and the plugin skipped, and pytest's code stands.
    """
