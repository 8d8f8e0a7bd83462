"""The per-token package cache quota: least recently used cache subtrees go first.

A token's npm, uv and pip caches (``sandbox.owner_dirs``) outlive its builds, so without a
bound a build could leave gigabytes behind (or millions of files) after every run. After each
build the server adds up the owner's cache subtrees (bytes as ``disk_usage`` counts them: the
larger of allocated and apparent size, plus entries), and while the total is over
``cache-max-bytes`` or ``cache-max-files`` deletes whole subtrees, least recently used first.

"Used" is the mtime of a marker ``<subtree>.used`` that the server touches when it runs a
command that uses that cache; the marker lives beside the subtree, outside anything a build can
write, so a build cannot make its cache look fresh. A subtree without a marker counts as the
oldest. All of it is file-tree work: call ``enforce`` in a thread, never on the event loop.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flow_kit_cloudbuild.server.runtime.sandbox import disk_usage

MARKER_SUFFIX = ".used"


def marker(subtree: Path) -> Path:
    return subtree.with_name(subtree.name + MARKER_SUFFIX)


def touch(subtrees: Iterable[Path]) -> None:
    """Record that a build is using ``subtrees`` now."""
    for subtree in subtrees:
        path = marker(subtree)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path)


def last_used(subtree: Path) -> float:
    try:
        return marker(subtree).stat().st_mtime
    except OSError:
        return 0.0


@dataclass(frozen=True)
class Evicted:
    """What ``enforce`` deleted, and what is left."""

    subtrees: tuple[Path, ...]
    bytes_left: int
    files_left: int


def enforce(subtrees: Iterable[Path], max_bytes: int, max_files: int) -> Evicted:
    """Delete the least recently used of ``subtrees`` until they hold at most ``max_bytes`` and
    ``max_files`` (0: that one is not bounded)."""
    sizes = {p: disk_usage(p) for p in subtrees if p.is_dir() and not p.is_symlink()}
    total = sum(u.bytes for u in sizes.values())
    files = sum(u.files for u in sizes.values())
    evicted: list[Path] = []
    for subtree in sorted(sizes, key=last_used):
        if not ((max_bytes and total > max_bytes) or (max_files and files > max_files)):
            break
        shutil.rmtree(subtree, ignore_errors=True)
        total -= sizes[subtree].bytes
        files -= sizes[subtree].files
        evicted.append(subtree)
    return Evicted(tuple(evicted), total, files)
