"""Local version first (Lerna's import-local): a project can pin its own flowcore.

When the global ``flow`` runs inside a project whose flow-managed environment
(``<root>/.flow/env``) has a *different* flowcore installed, the global one hands the whole
command line over to that environment's ``python -m flowcore``, so that a project gets the
flowcore it was tested with. ``FLOW_NO_LOCAL=1`` turns this off, and is set for the local flow to
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


def find_local_flowcore(start: str | os.PathLike[str]) -> tuple[Path, str] | None:
    """``(python, version)`` of a different flowcore in the nearest project's ``.flow/env``.

    Plain ``os.path`` until one is found: this runs on every start (see ``flowcore.paths``).
    """
    directory = os.path.abspath(start)
    while True:
        env = os.path.join(directory, ".flow", "env")
        if os.path.isdir(env):
            from pathlib import Path

            for info in sorted(Path(env).glob("lib/python*/site-packages/flowcore-*.dist-info")):
                version = info.name[len("flowcore-"):-len(".dist-info")]
                python = Path(env) / "bin" / "python"
                if version != __version__ and python.exists():
                    return python, version
            return None  # the nearest project decides, even when it has no flowcore of its own
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def hand_over_to_local(args: list[str], *, debug: bool = False) -> None:
    """Replace this process with the project's own flowcore, if it has a different one."""
    found = find_local_flowcore(_start_dir(args))
    if found is None:
        return
    python, version = found
    if debug:
        print(
            f"flow: debug: handing over to flowcore {version} of the project ({python}); "
            f"this is flowcore {__version__}. Set FLOW_NO_LOCAL=1 to stop this.",
            file=sys.stderr,
        )
    sys.stdout.flush()
    sys.stderr.flush()
    env = {**os.environ, "FLOW_NO_LOCAL": "1"}
    os.execve(str(python), [str(python), "-m", "flowcore", *args], env)
