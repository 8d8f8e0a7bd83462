"""Workspace trust: what flow runs from a project only after the user said so.

A project can ask flow to run code of its own: its ``.flow/env`` (a different flowcore to hand the
command line over to, ``.pth`` files, plugins installed there), the plugins its ``[tool.flow]``
names, and the package index its ``[tool.flow]`` points ``flow plugin add`` at. A repository
someone else wrote can commit all of these, so flow uses none of them until the user trusts the
project, the way ``direnv allow``, ``mise trust``, VS Code's workspace trust and git's
``safe.directory`` work.

What is trusted is recorded in ``$FLOW_HOME/trust.json``, per project root, with a fingerprint of
what the user looked at: the project config files' contents and the project environment's
interpreter. A ``git pull`` that changes either makes the project untrusted again, and flow asks
again. flow's own edits (``flow plugin add`` in a trusted project, ``flow create``) re-record the
fingerprint, so the user is never asked about a change flow made for them.

The check runs on every start inside a project that asks for something, so it is a ``stat`` of a
few files compared with the recorded ``stat`` (as git's index does); only a file whose ``stat``
changed is hashed (sha256), and ``hashlib`` (~2.5 ms with OpenSSL) is imported only then.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowcore._base import paths

if TYPE_CHECKING:
    from collections.abc import Iterable

    from flowcore.config.project_config import ProjectConfig

TRUST_FILE = "trust.json"
#: The files of a project root whose contents are trusted (whichever exist).
CONFIG_NAMES = ("pyproject.toml", "flow.toml")
#: A fingerprint is computed only from files this small; a bigger one is never trusted.
_MAX_HASHED = 4 * 1024 * 1024
#: The first bytes of a native executable (ELF; Mach-O 32/64, both byte orders; fat binaries).
_BINARY_MAGIC = (b"\x7fELF", b"\xfe\xed\xfa\xce", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf",
                 b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")

TRUSTED = "trusted"
DENIED = "denied"
UNKNOWN = "unknown"
CHANGED = "changed"

#: Roots this process already told the user about (one line per run, not one per check).
_noted: set[str] = set()


def store_path() -> Path:
    return paths.flow_home() / TRUST_FILE


def env_dir(root: str | os.PathLike[str]) -> str:
    """The project environment of ``root``, as the string the trust store records."""
    return str(paths.project_env_dir(root))


# -- fingerprints ----------------------------------------------------------------------------


def _stat_key(st: os.stat_result) -> list[int]:
    """What a change of the file's contents always changes (``ctime`` cannot be set back)."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _sha256_of(path: str) -> str | None:
    import hashlib

    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_HASHED + 1)
    except OSError:
        return None
    if len(data) > _MAX_HASHED:
        return None
    return hashlib.sha256(data).hexdigest()


def _file_entry(path: str) -> dict[str, Any] | None:
    """``{"stat": [...], "sha256": ...}`` of a regular file, ``None`` when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    import stat as stat_module

    if not stat_module.S_ISREG(st.st_mode):
        return {"stat": None, "sha256": "not a regular file"}
    return {"stat": _stat_key(st), "sha256": _sha256_of(path)}


def _interpreter(root: str) -> str | None:
    """Where the project environment's ``bin/python`` really is (``None``: no environment)."""
    python = os.path.join(env_dir(root), "bin", "python")
    if not os.path.lexists(python):
        return None
    return os.path.realpath(python)


def _tracked_files(root: str, extra: Iterable[str] = ()) -> list[str]:
    names = [os.path.join(root, n) for n in CONFIG_NAMES]
    names.append(os.path.join(env_dir(root), "pyvenv.cfg"))
    names += [os.path.abspath(e) for e in extra if os.path.abspath(e) not in names]
    return names


def fingerprint(root: str, extra: Iterable[str] = ()) -> dict[str, Any]:
    """What the user trusts when they trust ``root``: its config files and its interpreter."""
    return {"files": {f: _file_entry(f) for f in _tracked_files(root, extra)},
            "python": _interpreter(root)}


def _same_file(recorded: dict[str, Any] | None, path: str) -> bool:
    """Whether ``path`` still has the contents ``recorded`` (a stat first, a hash if needed)."""
    try:
        st = os.stat(path)
    except OSError:
        return recorded is None
    if recorded is None:
        return False
    if recorded.get("stat") is not None and recorded["stat"] == _stat_key(st):
        return True
    sha = recorded.get("sha256")
    return sha is not None and len(sha) == 64 and _sha256_of(path) == sha


def _changed(record: dict[str, Any], root: str, extra: Iterable[str]) -> list[str]:
    """The tracked things that differ from ``record`` (names relative to ``root``)."""
    files = record.get("files")
    if not isinstance(files, dict):
        return ["everything"]
    # A project environment that is gone runs nothing: deleting it (to rebuild it with
    # `flow doctor --fix`) is no change to ask about. One that is there must be the one trusted.
    env_gone = not os.path.lexists(env_dir(root))
    skip = {os.path.join(env_dir(root), "pyvenv.cfg")} if env_gone else set()
    tracked = _tracked_files(root, extra)
    out = []
    for path in [*tracked, *(p for p in files if p not in tracked)]:
        if path not in skip and not _same_file(files.get(path), path):
            out.append(os.path.relpath(path, root))
    if not env_gone and record.get("python") != _interpreter(root):
        out.append(".flow/env/bin/python")
    return out


# -- the store -------------------------------------------------------------------------------


def _read_store() -> dict[str, Any]:
    """``trust.json``, or an empty store when it is missing or unreadable (nothing is trusted)."""
    from flowcore._base.fileio import read_limited

    try:
        raw = read_limited(store_path(), 16 * 1024 * 1024)
    except Exception:  # noqa: BLE001 - an unreadable store trusts nothing; never fail a start
        return {}
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    projects = data.get("projects") if isinstance(data, dict) else None
    return projects if isinstance(projects, dict) else {}


def _write(mutate: Any) -> None:
    from flowcore._base.fileio import atomic_write_bytes, file_lock

    path = store_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with file_lock(path):
        projects = _read_store()
        mutate(projects)
        text = json.dumps({"version": 1, "projects": projects}, indent=2, sort_keys=True)
        atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def key_of(root: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.fspath(root))


def state(root: str | os.PathLike[str], extra: Iterable[str] = ()) -> tuple[str, list[str]]:
    """``(TRUSTED | DENIED | UNKNOWN | CHANGED, what changed)`` for the project at ``root``."""
    key = key_of(root)
    record = _read_store().get(key)
    if not isinstance(record, dict):
        return UNKNOWN, []
    changed = _changed(record, key, extra)
    if changed:  # a declined project that changed is asked about afresh
        return (CHANGED if record.get("state") == TRUSTED else UNKNOWN), changed
    return (TRUSTED if record.get("state") == TRUSTED else DENIED), []


def record(root: str | os.PathLike[str], decision: str = TRUSTED,
           extra: Iterable[str] = ()) -> None:
    """Record ``decision`` for ``root`` with the fingerprint it has now."""
    import time

    key = key_of(root)
    entry = {"state": decision, "at": int(time.time() * 1000), **fingerprint(key, extra)}

    def mutate(projects: dict[str, Any]) -> None:
        projects[key] = entry

    _write(mutate)


def revoke(root: str | os.PathLike[str]) -> bool:
    """Forget ``root``; whether it was recorded."""
    key = key_of(root)
    found = []

    def mutate(projects: dict[str, Any]) -> None:
        found.append(projects.pop(key, None) is not None)

    _write(mutate)
    return found[0]


def listing() -> dict[str, dict[str, Any]]:
    """Every recorded project root with its record."""
    return {k: v for k, v in sorted(_read_store().items()) if isinstance(v, dict)}


# -- the project environment -----------------------------------------------------------------


def env_problem(root: str | os.PathLike[str]) -> str | None:
    """Why the project environment at ``root`` must not run even in a trusted project, if so.

    It must be the user's (not another user's, nor writable by group or others, so nobody else
    can put code in it) and its ``bin/python`` a native interpreter, not a script.
    """
    env = paths.project_env_dir(root)
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    from flowcore.config.environment import site_packages_dir

    for path in (env, env / "bin", site_packages_dir(env)):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if uid is not None and st.st_uid != uid:
            return f"{path} belongs to another user"
        if st.st_mode & 0o022:
            return f"{path} is writable by other users"
    python = os.path.realpath(env / "bin" / "python")
    try:
        with open(python, "rb") as f:
            magic = f.read(4)
    except OSError:
        return f"{env / 'bin' / 'python'} does not lead to an interpreter"
    if magic not in _BINARY_MAGIC or not os.access(python, os.X_OK):
        return f"{env / 'bin' / 'python'} is not a Python interpreter"
    return None


# -- what a project asks for, and telling the user -------------------------------------------


def requests(project: ProjectConfig) -> list[str]:
    """What ``project`` would have flow run, in words (empty: it asks for nothing)."""
    from flowcore.config.schema import PROJECT_SOURCE_KEYS

    out = []
    if paths.project_env_dir(project.root).is_dir():
        out.append("its .flow/env")
    if project.plugins:
        out.append("plugins " + ", ".join(project.plugins))
    sources = [k for k in PROJECT_SOURCE_KEYS if project.data.get(k) is not None]
    if sources:
        out.append("package source " + ", ".join(sources))
    return out


def _one_line(text: str) -> str:
    """``text`` as one printable line (a folder name can hold escape sequences)."""
    from flowcore._base.printable import printable_line

    return printable_line(text)


def untrusted_line(root: str, asked: list[str], status: str, changed: list[str]) -> str:
    """The one line flow prints when it skips what an untrusted project asks for."""
    what = "; ".join(asked)
    why = (f"changed since you trusted it ({', '.join(changed)})" if status == CHANGED
           else "you declined to trust it" if status == DENIED else "not trusted")
    return _one_line(f"flow: project {paths.shown(root)} is {why}: not using {what}. "
                    f"Review them, then run 'flow trust' (or 'flow -g ...' to ignore the project).")


def interactive() -> bool:
    """Whether a question may be asked: both ends are a terminal and nobody said not to."""
    if os.environ.get("FLOW_NO_PROMPT") or os.environ.get("CI"):
        return False
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def check_project(project: ProjectConfig, *, quiet: bool = False) -> bool:
    """Whether ``project``'s own code may run this run; tell (or ask) the user once if not.

    Called once per run, only when the project asks for something (``requests``). ``quiet``:
    say nothing off a terminal (the caller raises its own error instead).
    """
    asked = requests(project)
    if not asked:
        return True
    root = key_of(project.root)
    extra = [str(project.file)]
    status, changed = state(root, extra)
    if status == TRUSTED:
        return True
    if root in _noted:
        return False
    _noted.add(root)
    if status != DENIED and interactive():
        import click

        line = untrusted_line(root, asked, status, changed)
        click.echo(line[:line.index(" Review them")], err=True)
        answer = click.confirm("flow: trust this project and run what it asks for?",
                               default=False, err=True)
        record(root, TRUSTED if answer else DENIED, extra)
        return answer
    if not quiet:
        print(untrusted_line(root, asked, status, changed), file=sys.stderr)
    return False


def note_skipped_env(root: str, reason: str, fix: str) -> None:
    """One line for a project environment flow did not hand over to (see local_handover)."""
    key = key_of(root)
    if key in _noted:
        return
    _noted.add(key)
    print(_one_line(f"flow: not using {paths.shown(key)}/.flow/env: {reason}. {fix}."), file=sys.stderr)
