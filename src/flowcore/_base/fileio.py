"""Atomic writes and inter-process locks: the two guarantees every flow file write relies on.

A reader must never see a half-written file, and two ``flow`` processes changing the same file
must not lose each other's changes. Writes go to a temp file in the same directory, are fsynced
and renamed over the target; read-modify-write cycles hold an ``fcntl`` lock on a sibling
``.lock`` file (the target itself is replaced, so it cannot carry the lock).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class NotARegularFile(OSError):
    """``read_limited``: the path is a directory, FIFO, device or socket (``kind`` says which)."""

    def __init__(self, path: str | Path, kind: str) -> None:
        self.kind = kind
        super().__init__(f"{path} is {kind}, not a regular file")


class FileTooLarge(OSError):
    """``read_limited``: the file holds more than ``limit`` bytes (``size``, as far as known)."""

    def __init__(self, path: str | Path, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(f"{path} is larger than {limit} bytes")


def file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "not a file"


def read_limited(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (a symlink is followed), never more than ``limit``.

    Never blocks and never reads without end: a FIFO, device or directory is refused from its
    mode before and after opening (opened non-blocking, so a FIFO does not wait for a writer), a
    file over ``limit`` from its size, and at most ``limit`` + 1 bytes are read, which catches a
    file that grows meanwhile. Raises FileNotFoundError, NotARegularFile, FileTooLarge, OSError.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFile(path, file_kind(mode))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between the stat and the open
            raise NotARegularFile(path, file_kind(st.st_mode))
        if st.st_size > limit:
            raise FileTooLarge(path, st.st_size, limit)
        os.set_blocking(fd, True)
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise FileTooLarge(path, len(data), limit)
        return data
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix."""
    import tempfile
    from pathlib import Path

    path = Path(path)

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def remove_stale_temp_files(path: str | Path) -> None:
    """Delete temp files that writers of ``path`` killed mid-write left behind.

    Only safe while holding ``file_lock(path)``: every writer of ``path`` writes under it, so no
    temp file can belong to a write in progress.
    """
    from pathlib import Path

    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def make_state_dir(path: Path) -> Path:
    """Create flow's own folder inside a user's tree (a project's ``.flow/``) if needed, with a
    ``.gitignore`` that ignores everything in it, so it never shows up as untracked files."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        ignore = path / ".gitignore"
        if not ignore.exists():
            with contextlib.suppress(OSError):
                ignore.write_text("# flow's state for this project (created by flow)\n*\n")
    return path


@contextlib.contextmanager
def file_lock(path: str | Path, lock_path: Path | None = None) -> Iterator[None]:
    """Hold an exclusive lock tied to ``path`` (on ``<path>.lock``, or ``lock_path``) for the
    block's duration."""
    import fcntl
    from pathlib import Path

    path = Path(path)

    lock_path = lock_path or path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
