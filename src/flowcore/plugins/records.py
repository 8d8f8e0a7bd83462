"""What loading a kit or plugin leaves on record: the commands it added, how to load it again,
and why it failed. The PluginSystem makes them; the command manifest (flowcore.registry.manifest)
stores them between runs, so help and dispatch need no plugin imported.

NamedTuples, not dataclasses: every ``flow --help`` reads them from the manifest, and defining a
slotted dataclass costs ~0.5 ms each at start-up against ~0.08 ms for a NamedTuple
(benchmarks/README.md, the cost ledger). They are immutable: a change is ``_replace``."""

from __future__ import annotations

import os
from typing import NamedTuple


class CommandRecord(NamedTuple):
    """One kit or plugin command as help lists it: name, short help, source (the distribution
    name of the kit or plugin) and kind ("kit", "kit-plugin", "project" or "general")."""

    name: str
    help: str
    source: str
    kind: str


class PluginRecord(NamedTuple):
    """One loaded kit or plugin: how to import it again (entry point values), which hooks it
    implements, and the stamps of its module files."""

    name: str
    kind: str
    entry_points: list[str]
    hooks: list[str]
    files: list[str]


class Failure(NamedTuple):
    """A kit or plugin that could not be loaded or whose hook raised, and why.

    ``commands`` are the names it registered the last time it loaded (carried over from the
    previous manifest), so that they keep existing while it is broken: running one says which
    plugin failed and how to fix it, instead of "no such command".
    """

    name: str
    kind: str
    cause: str
    commands: tuple[str, ...] = ()


def file_stamp(path: str) -> str:
    """How a plugin file is recorded: ``path|[mtime_ns, size]``, compared on every load."""
    return f"{path}|{stat_stamp(path)}"


def stat_stamp(path: str | os.PathLike[str]) -> list[int] | None:
    """``[mtime_ns, size]`` of ``path``, or ``None`` when it is missing: what the manifest's
    fingerprint and a plugin file's stamp compare."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]
