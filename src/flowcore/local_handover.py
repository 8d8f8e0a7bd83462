"""Local version first (Lerna's import-local): a project can pin its own flowcore.

When the global ``flow`` runs inside a project whose flow-managed environment
(``<root>/.flow/env``) has a *different* flowcore installed, the global one hands the whole
command line over to that environment's ``python -m flowcore``, so that a project gets the
flowcore it was tested with. Only in a project the user trusts (``flowcore.trust``), and only to
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

from flowcore import __version__

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


def find_local_flowcore(start: str | os.PathLike[str]) -> tuple[Path, str] | None:
    """``(python, version)`` of a different flowcore in the nearest project's ``.flow/env``.

    Plain ``os.path`` until one is found: this runs on every start (see ``flowcore.paths``).
    Whether it may run is not decided here (``hand_over_to_local`` asks ``flowcore.trust``).
    """
    directory = os.path.abspath(start)
    while True:
        env = os.path.join(directory, ".flow", "env")
        if os.path.isdir(env):
            for version in _flowcore_versions(env):
                python = os.path.join(env, "bin", "python")
                if version != __version__ and os.path.lexists(python):
                    from pathlib import Path

                    return Path(python), version
            return None  # the nearest project decides, even when it has no flowcore of its own
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _flowcore_versions(env: str) -> list[str]:
    """Versions of the ``flowcore-*.dist-info`` in ``env``'s ``lib/python*/site-packages``
    (``os.listdir``, not ``pathlib``'s glob: this runs on every start inside a project)."""
    lib = os.path.join(env, "lib")
    try:
        pythons = sorted(n for n in os.listdir(lib) if n.startswith("python"))
    except OSError:
        return []
    versions = []
    for name in pythons:
        try:
            entries = os.listdir(os.path.join(lib, name, "site-packages"))
        except OSError:
            continue
        versions += [e[len("flowcore-"):-len(".dist-info")] for e in sorted(entries)
                     if e.startswith("flowcore-") and e.endswith(".dist-info")]
    return versions


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when below it (``./.flow/env``)."""
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith("..") else f"./{rel}"


def hand_over_to_local(args: list[str], *, debug: bool = False) -> None:
    """Replace this process with the project's own flowcore, if it has a different one and the
    user trusts the project (``flowcore.trust``); says so in one line either way."""
    if _command_of(args) == "trust":
        return  # answered by this flowcore: the one deciding whether the other may run
    found = find_local_flowcore(_start_dir(args))
    if found is None:
        return
    python, version = found
    from flowcore import trust

    env = python.parent.parent
    root = str(env.parent.parent)
    status, changed = trust.state(root)
    if status != trust.TRUSTED:
        reason = {trust.CHANGED: f"the project changed since you trusted it ({', '.join(changed)})",
                  trust.DENIED: "you declined to trust this project"}.get(
            status, "this project is not trusted")
        trust.note_skipped_env(root, f"it holds flowcore {version} but {reason}",
                               "Review it, then run 'flow trust' there")
        return
    problem = trust.env_problem(root)
    if problem is not None:
        trust.note_skipped_env(root, problem, "Delete .flow/env; flow plugin add recreates it")
        return
    print(f"flow: using flowcore {version} from {_shown(env)}", file=sys.stderr)
    if debug:
        print(f"flow: debug: this is flowcore {__version__}; handing over to {python}. "
              f"Set FLOW_NO_LOCAL=1 to stop this.", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    environ = {**os.environ, "FLOW_NO_LOCAL": "1"}
    os.execve(str(python), [str(python), "-m", "flowcore", *args], environ)
