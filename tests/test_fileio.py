"""flowcore._base.fileio: atomic writes, bounded reads, the temp-file sweep and the inter-process lock.

Real files, FIFOs, devices and processes; nothing is mocked.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flowcore._base.fileio import (
    FileTooLarge,
    NotARegularFile,
    atomic_write_bytes,
    file_lock,
    read_limited,
    remove_stale_temp_files,
)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# -- atomic_write_bytes ----------------------------------------------------------------------------


def test_atomic_write_creates_parents_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "config.json"
    atomic_write_bytes(target, b'{"x": 1}')
    assert target.read_bytes() == b'{"x": 1}'
    assert leftovers(target.parent) == []
    assert target.stat().st_mode & 0o777 == 0o644  # a new file: 0644 whatever the temp file had


def test_atomic_write_replaces_the_file_and_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    target.write_bytes(b"old")
    target.chmod(0o600)
    with target.open("rb") as reader:  # opened before: still reads the old file, whole
        atomic_write_bytes(target, b"new content")
        assert reader.read() == b"old"
    assert target.read_bytes() == b"new content"
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_write_that_fails_keeps_the_old_file_and_removes_its_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]  # fails inside the write
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_a_reader_sees_the_old_or_the_new_file_never_a_mix(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    versions = [bytes([65 + i]) * (1 << 20) for i in range(2)]
    atomic_write_bytes(target, versions[0])
    stop = threading.Event()
    writes = [0]

    def write() -> None:
        while not stop.is_set():
            writes[0] += 1
            atomic_write_bytes(target, versions[writes[0] % 2])

    writer = threading.Thread(target=write)
    writer.start()
    try:
        deadline = time.monotonic() + 60
        while writes[0] < 20:  # reads overlap at least 20 replacements
            assert time.monotonic() < deadline, "the writer made no progress"
            data = target.read_bytes()
            assert data in versions, (len(data), data[:1], data[-1:])
    finally:
        stop.set()
        writer.join()
    assert leftovers(tmp_path) == []


# -- read_limited ----------------------------------------------------------------------------------


def test_read_limited_reads_a_file_up_to_its_limit(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    assert read_limited(f, 100) == b"x" * 100
    (tmp_path / "empty").write_bytes(b"")
    assert read_limited(tmp_path / "empty", 0) == b""
    link = tmp_path / "link"
    link.symlink_to(f)
    assert read_limited(link, 1000) == b"x" * 100  # a symlink to a regular file is followed


def test_read_limited_refuses_a_file_over_the_limit(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 101)
    with pytest.raises(FileTooLarge) as info:
        read_limited(f, 100)
    assert (info.value.size, info.value.limit) == (101, 100)


def test_read_limited_bounds_the_read_when_the_size_lies() -> None:
    # /proc files report a size of 0 and hold more: only the read itself can catch them
    status = Path("/proc/self/status")
    if not status.exists() or status.stat().st_size != 0:
        pytest.skip("needs Linux /proc")
    with pytest.raises(FileTooLarge) as info:
        read_limited(status, 10)
    assert info.value.size == 11  # read limit + 1 bytes, no more
    assert b"Name:" in read_limited(status, 1 << 20)


def test_read_limited_refuses_directories_devices_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(NotARegularFile) as info:
        read_limited(tmp_path, 100)
    assert info.value.kind == "a directory"
    (tmp_path / "dirlink").symlink_to(tmp_path)
    with pytest.raises(NotARegularFile):
        read_limited(tmp_path / "dirlink", 100)
    with pytest.raises(NotARegularFile) as info:
        read_limited(Path("/dev/zero"), 100)  # endless: refused from its mode, not read
    assert info.value.kind == "a character device"
    with pytest.raises(FileNotFoundError):
        read_limited(tmp_path / "missing", 100)


def test_read_limited_refuses_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_limited(fifo, 100)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # blocked in open(): give it a writer so the thread can end
        with open(fifo, "wb"):
            pass
        pytest.fail("read_limited blocked on a FIFO with no writer")
    [exc] = outcome
    assert isinstance(exc, NotARegularFile) and exc.kind == "a FIFO (named pipe)"


# -- remove_stale_temp_files -----------------------------------------------------------------------

# A writer that dies between writing its temp file and renaming it over the target: the process
# exits (no cleanup runs) at the moment atomic_write_bytes calls os.replace.
KILLED_WRITER = """
import os, sys
from pathlib import Path
from flowcore._base import fileio as _fileio
os.replace = lambda *args: os._exit(9)
_fileio.atomic_write_bytes(Path(sys.argv[1]), b"half done")
"""


def test_the_sweep_removes_what_killed_writers_left_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    target.write_bytes(b"old")
    for _ in range(2):
        died = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], check=False)
        assert died.returncode == 9
    stale = leftovers(tmp_path)
    assert len(stale) == 2 and all(name.startswith(".config.json.") for name in stale), stale
    keep = [".other.json.abc.tmp", "config.json.abc.tmp", ".config.json.abc.tmpx",
            ".config.json.lock", "notes.tmp"]
    for name in keep:
        (tmp_path / name).write_bytes(b"keep")
    with file_lock(target):
        remove_stale_temp_files(target)
    assert target.read_bytes() == b"old"  # the killed writes never reached the target
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, "config.json", "config.json.lock"])


# -- file_lock -------------------------------------------------------------------------------------

HOLDER = """
import sys
from pathlib import Path
from flowcore._base.fileio import file_lock
with file_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def _locked_by_someone(lock_file: Path) -> bool:
    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock this probe took
    return False


def test_the_lock_excludes_other_processes_and_dies_with_its_holder(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        lock_file = tmp_path / "config.json.lock"
        assert _locked_by_someone(lock_file)
        holder.send_signal(signal.SIGKILL)  # killed while holding it: the kernel releases it
        holder.wait(10)
        assert not _locked_by_someone(lock_file)
        with file_lock(target):
            assert _locked_by_someone(lock_file)
        assert not _locked_by_someone(lock_file)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
