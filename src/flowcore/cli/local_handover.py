"""Local version first (Lerna's import-local): a project can pin its own flowcore.

When the global ``flow`` runs inside a project whose flow-managed environment
(``<root>/.flow/env``) has a flowcore of its own installed (a ``flowcore-*.dist-info`` in its
site-packages), and that installation is not the one running (another version, or the same
version installed apart: another site-packages, another editable checkout), the global one hands
the whole command line over to that environment's ``python -m flowcore``, so that a project gets
the flowcore it was tested with. Only in a project the user trusts (``flowcore.config.trust``), and only to
an environment that is the user's own with a real interpreter: a cloned repository can commit a
``.flow/env/bin/python`` that is any program. It says so in one line every time.
``FLOW_NO_LOCAL=1`` turns this off, and is set for the local flow to
stop any loop.

This runs before anything else on every start, so it is cheap: walk up from the working
directory (or ``--root``) looking for ``.flow/env``, and glob for ``flowcore-*.dist-info`` only
where one exists. No config is parsed here.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from flowcore._base.version import __version__

if TYPE_CHECKING:
    from pathlib import Path


def _start_dir(args: list[str]) -> str:
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--root" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--root="):
            return arg.partition("=")[2]
    return os.getcwd()


#: The root's options that take a value (the value is not the command's name).
_VALUED = ("--root", "--config", "-k", "--build-kit")


def _command_of(args: list[str]) -> str | None:
    """The command's name on ``args`` (the first word that is no option nor an option's value)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--":
            return None
        elif arg in _VALUED:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _running_installation() -> tuple[str, str]:
    """Where the running flowcore is installed: ``(sys.prefix, the folder holding the flowcore
    package)``, both resolved. An installation in an environment is that environment's (its
    ``site-packages`` holds the package, or, installed editable, its interpreter runs us)."""
    # this file is <folder>/flowcore/cli/local_handover.py
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    return os.path.realpath(sys.prefix), package


def _is_running(env: str, site_packages: str, running: tuple[str, str]) -> bool:
    """Whether the flowcore installed in ``env`` is the one running (see _running_installation)."""
    prefix, package = running
    return os.path.realpath(env) == prefix or os.path.realpath(site_packages) == package


def find_local_flowcore(start: str | os.PathLike[str], *,
                        running: tuple[str, str] | None = None) -> tuple[Path, str] | None:
    """``(python, version)`` of the flowcore in the nearest project's ``.flow/env`` when it is
    another installation than the running one (``running``: ``_running_installation()``),
    whatever its version.

    Plain ``os.path`` until one is found: this runs on every start, before click or anything else
    of flow is imported.
    Whether it may run is not decided here (``hand_over_to_local`` asks ``flowcore.config.trust``).
    """
    root = nearest_env_root(start)
    if root is None:
        return None
    env = os.path.join(root, ".flow", "env")
    python = os.path.join(env, "bin", "python")
    for site_packages, version in _flowcore_versions(env):  # none: the nearest project decides
        if not os.path.lexists(python):
            break
        if _is_running(env, site_packages, running or _running_installation()):
            return None  # this process is that environment's flowcore
        from pathlib import Path

        return Path(python), version
    return None


def nearest_env_root(start: str | os.PathLike[str]) -> str | None:
    """The nearest folder at or above ``start`` holding a ``.flow/env`` (plain ``os.path``)."""
    directory = os.path.abspath(start)
    while True:
        if os.path.isdir(os.path.join(directory, ".flow", "env")):
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _flowcore_versions(env: str) -> list[tuple[str, str]]:
    """``(site-packages, version)`` of each ``flowcore-*.dist-info`` in ``env``'s
    ``lib/python*/site-packages`` (``os.listdir``, not ``pathlib``'s glob: this runs on every
    start inside a project)."""
    lib = os.path.join(env, "lib")
    try:
        pythons = sorted(n for n in os.listdir(lib) if n.startswith("python"))
    except OSError:
        return []
    versions = []
    for name in pythons:
        site_packages = os.path.join(lib, name, "site-packages")
        try:
            entries = os.listdir(site_packages)
        except OSError:
            continue
        versions += [(site_packages, e[len("flowcore-"):-len(".dist-info")]) for e in sorted(entries)
                     if e.startswith("flowcore-") and e.endswith(".dist-info")]
    return versions


def hand_over_to_local(args: list[str], *, debug: bool = False) -> None:
    """Replace this process with the project's own flowcore, if it has another installation and
    the user trusts the project (``flowcore.config.trust``); says so in one line either way (not while
    a shell completes a command line: the project's flowcore answers, and nothing is printed)."""
    if _command_of(args) == "trust":
        return  # answered by this flowcore: the one deciding whether the other may run
    found = find_local_flowcore(_start_dir(args))
    if found is None:
        return
    python, version = found
    quiet = bool(os.environ.get("_FLOW_COMPLETE"))  # flowcore.cli.main.COMPLETE_VAR
    from flowcore.config import trust

    env = python.parent.parent
    root = str(env.parent.parent)
    status, changed = trust.state(root)
    if status != trust.TRUSTED:
        reason = {trust.CHANGED: f"the project changed since you trusted it ({', '.join(changed)})",
                  trust.DENIED: "you declined to trust this project"}.get(
            status, "this project is not trusted")
        if not quiet:
            trust.note_skipped_env(root, f"it holds flowcore {version} but {reason}",
                                   "Review it, then run 'flow trust' there")
        return
    problem = trust.env_problem(root)
    if problem is not None:
        if not quiet:
            trust.note_skipped_env(root, problem, "Delete .flow/env; flow plugin add recreates it")
        return
    if not quiet:
        from flowcore._base.paths import shown

        print(f"flow: using flowcore {version} from {shown(env)}", file=sys.stderr)
    if debug and not quiet:
        print(f"flow: debug: this is flowcore {__version__} from {_running_installation()[1]}; "
              f"handing over to {python}. Set FLOW_NO_LOCAL=1 to stop this.", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    environ = {**os.environ, "FLOW_NO_LOCAL": "1"}
    os.execve(str(python), [str(python), "-m", "flowcore", *args], environ)
