"""Artifact store: the files a task's build produced (releases: storage/releases.py).

One interface (``ArtifactStore``) with the embedded implementation ``LocalArtifactStore``:
``<data>/artifacts/<taskId>/files/<name>`` plus a ``manifest.json`` listing them. Files are
keyed by the server-made task id; a package's name and version never become a path (they are
keys in ``releases.json``). A download is served only for a name listed in the manifest.

Storing is file-tree work (a copy of up to ``artifact-max-bytes``, an rmtree): it runs in a
worker thread, so the event loop (every other task's messages, ``/healthz``) never waits for
it. The copy is bounded: it counts every byte it writes and stops at the task's quota, so a
sparse or growing file cannot expand past it on the server's disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from flow_kit_cloudbuild.server.policy import is_id
from flowcore.api import atomic_write_bytes

_PART_RE = re.compile(r"^[A-Za-z0-9_.+@=~-][A-Za-z0-9_.+@=~# -]{0,199}$")  # URLs quote " " and "#"


def safe_artifact_name(name: str) -> bool:
    """A relative POSIX path of plain parts (no '..', no hidden tricks, no absolute path)."""
    parts = name.split("/")
    return (0 < len(name) <= 1024 and len(parts) <= 16
            and all(p not in (".", "..") and _PART_RE.match(p) for p in parts))


COPY_CHUNK = 1024 * 1024


class ArtifactQuotaExceeded(Exception):
    """The files being stored grew past the task's artifact quota while they were copied."""


class ArtifactStore(Protocol):
    async def put(self, task_id: str, files: list[tuple[str, Path]], *,
                  max_bytes: int = 0) -> list[dict[str, Any]]:
        """Store ``(name, source file)`` pairs for a task; return [{"name", "size"}].

        Raises ArtifactQuotaExceeded (and stores nothing) once more than ``max_bytes`` (0: no
        limit) would be written."""

    async def list(self, task_id: str) -> list[dict[str, Any]] | None:
        """The task's artifacts, or None when the task stored none."""

    async def open(self, task_id: str, name: str) -> tuple[int, AsyncIterator[bytes]] | None:
        """(size, chunks) of one artifact, or None when there is no such artifact."""


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _dir(self, task_id: str) -> Path:
        if not is_id(task_id):
            raise KeyError(task_id)
        return self.root / task_id

    async def put(self, task_id: str, files: list[tuple[str, Path]], *,
                  max_bytes: int = 0) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._put, self._dir(task_id), files, max_bytes)

    def _put(self, d: Path, files: list[tuple[str, Path]], max_bytes: int) -> list[dict[str, Any]]:
        files_dir = d / "files"
        if d.exists():
            shutil.rmtree(d)
        files_dir.mkdir(parents=True)
        listed = []
        left = max_bytes or -1
        try:
            for name, src in files:
                if not safe_artifact_name(name):
                    continue
                dest = files_dir.joinpath(*name.split("/"))
                dest.parent.mkdir(parents=True, exist_ok=True)
                size = _copy_no_follow(src, dest, left)
                if left >= 0:
                    left -= size
                listed.append({"name": name, "size": size})
        except ArtifactQuotaExceeded:
            shutil.rmtree(d, ignore_errors=True)
            raise
        atomic_write_bytes(d / "manifest.json", json.dumps(listed).encode("utf-8"))
        return listed

    async def list(self, task_id: str) -> list[dict[str, Any]] | None:
        try:
            return json.loads((self._dir(task_id) / "manifest.json").read_text(encoding="utf-8"))
        except (KeyError, OSError, ValueError):
            return None

    async def open(self, task_id: str, name: str) -> tuple[int, AsyncIterator[bytes]] | None:
        listed = await self.list(task_id)
        if not listed or name not in {a["name"] for a in listed}:
            return None
        path = self._dir(task_id) / "files" / Path(*name.split("/"))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        f = os.fdopen(fd, "rb")
        size = os.fstat(fd).st_size

        async def chunks() -> AsyncIterator[bytes]:
            with f:
                while block := f.read(256 * 1024):
                    yield block

        return size, chunks()

    async def delete(self, task_id: str) -> None:
        """Delete a task's artifacts (retention), in a thread: a tree of many files takes time."""
        await asyncio.to_thread(shutil.rmtree, self._dir(task_id), True)



def _copy_no_follow(src: Path, dest: Path, limit: int = -1) -> int:
    """Copy a regular file without following a symlink at ``src`` (it was resolved before), in
    chunks, counting the bytes written; raise ArtifactQuotaExceeded past ``limit`` (-1: none).
    Holes are written as zeros, so a sparse file costs its full size: hence the count."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    written = 0
    with os.fdopen(fd, "rb") as fin, open(dest, "wb") as fout:
        while chunk := fin.read(COPY_CHUNK if limit < 0 else min(COPY_CHUNK, limit - written + 1)):
            written += len(chunk)
            if 0 <= limit < written:
                raise ArtifactQuotaExceeded(f"the artifacts grew past {limit} bytes while they were stored")
            fout.write(chunk)
    return written
