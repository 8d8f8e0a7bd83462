"""``flow create --git/--no-git``: a new project as a git repository with a first commit.

The default is ``create.git`` in ``$FLOW_HOME/config.json``: ``"auto"`` (the default), ``true`` or
``false``. ``auto`` is cargo's rule: a repository when the new project is not already inside
one's work tree, git is installed, and the target is new or empty. The repository is made in the
staging directory, before anything is moved into place, so a failing ``git`` leaves nothing
behind. See docs/create.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from flowcore._base.errors import FlowError, UsageError, warn

CONFIG_KEY = "create.git"
FIRST_MESSAGE = "Initial commit"


class Plan:
    """What to do: ``init`` a repository, and ``commit`` in it (False: no git identity)."""

    __slots__ = ("init", "commit")

    def __init__(self, init: bool, commit: bool) -> None:
        self.init = init
        self.commit = commit


def configured(data: dict[str, Any]) -> bool | None:
    """``create.git`` of the global config: True, False, or None for auto."""
    section = data.get("create")
    value = section.get("git", "auto") if isinstance(section, dict) else "auto"
    if value == "auto":
        return None
    if isinstance(value, bool):
        return value
    raise UsageError(f"{CONFIG_KEY} in the global config is {value!r}, not true, false or \"auto\"",
                     f"Set it: flow config set {CONFIG_KEY} true (or false, or auto)")


def _nearest_dir(path: Path) -> Path:
    return next(p for p in [path, *path.parents] if p.is_dir())


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0"}, check=False)


def _inside_work_tree(path: Path) -> bool:
    proc = _git(_nearest_dir(path), "rev-parse", "--is-inside-work-tree")
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def _has_identity(path: Path) -> bool:
    where = _nearest_dir(path)
    return all(_git(where, "var", var).returncode == 0
               for var in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"))


def plan(flag: bool | None, config: dict[str, Any], target: Path) -> Plan:
    """Decide before anything is rendered; an explicit ``--git`` that cannot be honoured is a
    usage error now, not a half-made project later."""
    wanted = flag if flag is not None else configured(config)
    if wanted is False:
        return Plan(False, False)
    new_target = not target.exists() or (target.is_dir() and next(target.iterdir(), None) is None)
    if wanted is None:  # auto
        if shutil.which("git") is None or not new_target or _inside_work_tree(target):
            return Plan(False, False)
        return Plan(True, _has_identity(target))
    source = "--git" if flag else f"{CONFIG_KEY} = true"
    if shutil.which("git") is None:
        raise UsageError(f"{source} asks for a git repository, and git is not installed",
                         "Install git, or pass --no-git")
    if not new_target:
        raise UsageError(f"{source} makes a new repository, and {target} is not empty",
                         "Create the project in a new directory, or pass --no-git")
    if not _has_identity(target):
        raise UsageError(f"{source} makes a first commit, and git does not know who you are",
                         "Set it: git config --global user.name NAME && git config --global "
                         "user.email EMAIL, or pass --no-git")
    return Plan(True, True)


def make(project: Path, plan: Plan, body: str) -> None:
    """``git init`` in the staged ``project``, add everything, and commit (when ``plan`` says)."""
    steps: list[tuple[str, ...]] = [("init", "-q"), ("add", "-A")]
    if plan.commit:
        steps.append(("commit", "-q", "-m", FIRST_MESSAGE, "-m", body))
    for step in steps:
        proc = _git(project, *step)
        if proc.returncode != 0:
            reason = " ".join((proc.stderr or proc.stdout).split())[:300]
            raise FlowError(f"git {step[0]} failed in the new project: {reason or proc.returncode}",
                            "Fix git (or pass --no-git); nothing was created")
    if not plan.commit:
        warn("the new project is a git repository with its files added, but without a first "
             "commit: git does not know who you are",
             f"Set git config --global user.name and user.email, then: git commit -m "
             f"'{FIRST_MESSAGE}'")
