"""Artifact store: the files a task's build produced (releases: storage/releases.py).

One interface (``ArtifactStore``), one implementation on an ``objects.ObjectStore``
(``ObjectArtifactStore``): ``<taskId>/files/<name>`` plus a ``<taskId>/manifest.json`` listing
them, in the data dir (``LocalArtifactStore``: ``<data>/artifacts/...``) or in S3
(``--store s3://bucket/prefix``: ``prefix/artifacts/...``). Files are keyed by the server-made
task id; a package's name and version never become a key. A download is served only for a name
listed in the manifest, and the manifest is written last: a task's artifacts appear whole.

Storing is bounded: the sizes of the files (``fstat``, so a sparse file counts at its full
size) must fit the task's quota before anything is written, and each file is stored capped at
the size it had then; one that grew meanwhile is refused. So no build can put more than
``artifact-max-bytes`` into the store. Files are stored a few at a time (``PARALLEL``): with S3
each is a round trip, and a site is hundreds of small files.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import mimetypes
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from flow_kit_cloudbuild.server.policy import is_id
from flow_kit_cloudbuild.server.storage.objects import LocalObjectStore, ObjectStore, ObjectTooLarge

_PART_RE = re.compile(r"^[A-Za-z0-9_.+@=~-][A-Za-z0-9_.+@=~# -]{0,199}$")  # URLs quote " " and "#"


def safe_artifact_name(name: str) -> bool:
    """A relative POSIX path of plain parts (no '..', no hidden tricks, no absolute path)."""
    parts = name.split("/")
    return (0 < len(name) <= 1024 and len(parts) <= 16
            and all(p not in (".", "..") and _PART_RE.match(p) for p in parts))


PARALLEL = 16  # files stored at once
MAX_MANIFEST = 16 * 1024 * 1024


class ArtifactQuotaExceeded(Exception):
    """The files being stored grew past the task's artifact quota while they were copied."""


class ArtifactStore(Protocol):
    async def put(self, task_id: str, files: list[tuple[str, Path]], *,
                  max_bytes: int = 0) -> list[dict[str, Any]]:
        """Store ``(name, source file)`` pairs for a task; return [{"name", "size", "sha256"}].

        Raises ArtifactQuotaExceeded (and stores nothing) once more than ``max_bytes`` (0: no
        limit) would be written."""

    async def list(self, task_id: str) -> list[dict[str, Any]] | None:
        """The task's artifacts, or None when the task stored none."""

    async def open(self, task_id: str, name: str) -> tuple[int, AsyncIterator[bytes]] | None:
        """(size, chunks) of one artifact, or None when there is no such artifact."""

    async def delete(self, task_id: str) -> None:
        """Delete a task's artifacts."""

    async def copy(self, src_task: str, dest_task: str) -> builtins.list[dict[str, Any]] | None:
        """``src_task``'s artifacts stored again as ``dest_task``'s; None when it has none."""

    async def put_provenance(self, task_id: str, envelope: bytes) -> None:
        """Store the task's signed provenance statement."""

    async def provenance(self, task_id: str) -> bytes | None:
        """The task's signed provenance statement, or None."""


class ObjectArtifactStore:
    """``ArtifactStore`` on an ``ObjectStore`` (the artifacts' part of it: ``objects.child("artifacts")``)."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    @staticmethod
    def _prefix(task_id: str) -> str:
        if not is_id(task_id):
            raise KeyError(task_id)
        return f"{task_id}/"

    async def put(self, task_id: str, files: list[tuple[str, Path]], *,
                  max_bytes: int = 0) -> list[dict[str, Any]]:
        prefix = self._prefix(task_id)
        await self.objects.delete_prefix(prefix)
        opened: list[tuple[str, Any, int]] = []
        try:
            total = 0
            for name, src in files:
                if not safe_artifact_name(name):
                    continue
                fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)  # resolved before: no symlink now
                fh = os.fdopen(fd, "rb")
                size = os.fstat(fd).st_size
                opened.append((name, fh, size))
                total += size
                if max_bytes and total > max_bytes:
                    raise ArtifactQuotaExceeded(f"the artifacts grew past {max_bytes} bytes while they were stored")
            gate = asyncio.Semaphore(PARALLEL)

            async def store(name: str, fh: Any, size: int) -> tuple[int, str]:
                async with gate:
                    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
                    digest = await asyncio.to_thread(_sha256, fh, size)
                    try:
                        put = await self.objects.put_file(f"{prefix}files/{name}", fh, limit=size,
                                                          content_type=kind)
                    except ObjectTooLarge:
                        raise ArtifactQuotaExceeded(
                            f"the artifacts grew past {max_bytes or total} bytes while they were stored") from None
                    if put != size:  # shrank after it was hashed: its digest would not be its bytes'
                        raise ArtifactQuotaExceeded(f"{name} changed while it was stored")
                    return put, digest

            async with asyncio.TaskGroup() as group:  # one failure cancels the others
                stored = [group.create_task(store(*o)) for o in opened]
            results = [t.result() for t in stored]
        except BaseException as exc:
            await asyncio.shield(self.objects.delete_prefix(prefix))
            if isinstance(exc, BaseExceptionGroup):  # the TaskGroup's: the first one says why
                raise exc.exceptions[0] from None
            raise
        finally:
            for _, fh, _ in opened:
                fh.close()
        listed = [{"name": name, "size": size, "sha256": digest}
                  for (name, _, _), (size, digest) in zip(opened, results, strict=True)]
        await self._put_manifest(prefix, listed)
        return listed

    async def _put_manifest(self, prefix: str, listed: list[dict[str, Any]]) -> None:
        await self.objects.put_bytes(f"{prefix}manifest.json", json.dumps(listed).encode("utf-8"),
                                     content_type="application/json")

    async def copy(self, src_task: str, dest_task: str) -> list[dict[str, Any]] | None:
        """Store ``src_task``'s artifacts again as ``dest_task``'s (a build-cache hit: a new
        deployment of the same files, which lives on when retention deletes the first); None when
        ``src_task`` has none left. The files are copied inside the store (``ObjectStore.copy``)
        and the manifest is written last, so ``dest_task``'s artifacts appear whole or not at all."""
        listed = await self.list(src_task)
        if listed is None:
            return None
        src, dest = self._prefix(src_task), self._prefix(dest_task)
        await self.objects.delete_prefix(dest)
        gate = asyncio.Semaphore(PARALLEL)

        async def one(name: str) -> bool:
            async with gate:
                return await self.objects.copy(f"{src}files/{name}", f"{dest}files/{name}")
        try:
            async with asyncio.TaskGroup() as group:
                copied = [group.create_task(one(str(a["name"]))) for a in listed]
            if not all(t.result() for t in copied):  # retention took some meanwhile
                await self.objects.delete_prefix(dest)
                return None
            await self._put_manifest(dest, listed)
        except BaseException as exc:
            await asyncio.shield(self.objects.delete_prefix(dest))
            if isinstance(exc, BaseExceptionGroup):
                raise exc.exceptions[0] from None
            raise
        return listed

    async def put_provenance(self, task_id: str, envelope: bytes) -> None:
        """The task's signed provenance (a DSSE envelope, attestation.py), beside its manifest:
        not an artifact (never listed, never in the provenance's own subjects)."""
        await self.objects.put_bytes(f"{self._prefix(task_id)}provenance.json", envelope,
                                     content_type="application/json")

    async def provenance(self, task_id: str) -> bytes | None:
        """The task's signed provenance, or None (a task from before provenance, or none stored)."""
        try:
            return await self.objects.get_bytes(f"{self._prefix(task_id)}provenance.json")
        except KeyError:
            return None

    async def list(self, task_id: str) -> list[dict[str, Any]] | None:
        try:
            raw = await self.objects.get_bytes(f"{self._prefix(task_id)}manifest.json")
            return None if raw is None else list(json.loads(raw))
        except (KeyError, ValueError, TypeError):
            return None

    async def open(self, task_id: str, name: str) -> tuple[int, AsyncIterator[bytes]] | None:
        listed = await self.list(task_id)
        if not listed or name not in {a["name"] for a in listed}:
            return None
        opened = await self.objects.open(f"{self._prefix(task_id)}files/{name}")
        return None if opened is None else (opened.size, opened.chunks)

    async def delete(self, task_id: str) -> None:
        """Delete a task's artifacts (retention)."""
        await self.objects.delete_prefix(self._prefix(task_id))

    async def task_ids(self) -> dict[str, float]:
        """Task id -> when its artifacts were stored (the sweep's "artifacts whose task is gone")."""
        found: dict[str, float] = {}
        for info in await self.objects.list(""):
            task_id, _, rest = info.key.partition("/")
            if is_id(task_id):
                found[task_id] = max(found.get(task_id, 0.0), info.mtime)
        return found


def _sha256(fh: Any, size: int) -> str:
    """The sha256 of the first ``size`` bytes of ``fh``, which is left at its start again."""
    digest = hashlib.sha256()
    left = size
    while left > 0 and (block := fh.read(min(1024 * 1024, left))):
        digest.update(block)
        left -= len(block)
    fh.seek(0)
    return digest.hexdigest()


class LocalArtifactStore(ObjectArtifactStore):
    """The embedded default: artifacts under a local directory (``<data>/artifacts``)."""

    def __init__(self, root: Path, objects: ObjectStore | None = None) -> None:
        self.root = root
        if objects is None:
            with contextlib.suppress(OSError):
                root.mkdir(parents=True, exist_ok=True)
        super().__init__(objects or LocalObjectStore(root))
