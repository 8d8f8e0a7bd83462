"""Artifact store for Redis mode: files on a directory every process shares, releases in Redis.

Artifact bytes stay on disk (``LocalArtifactStore`` under ``<shared-dir>/artifacts``): builds
can produce hundreds of megabytes, which do not belong in Redis's memory. Across machines that
directory must be shared storage (NFS, a mounted volume). Only the prod release index moves to
Redis (hash ``flowcb:releases``), so that "is name+version released?" and "record this release"
are single atomic commands that every worker sees at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...artifacts import LocalArtifactStore

RELEASES = "flowcb:releases"


class SharedArtifactStore(LocalArtifactStore):
    def __init__(self, root: Path, redis: Any) -> None:
        super().__init__(root)
        self.redis = redis

    async def find_release(self, name: str, version: str) -> str | None:
        got = await self.redis.hget(RELEASES, f"{name}\n{version}")
        return got.decode() if isinstance(got, bytes) else got

    async def record_release(self, name: str, version: str, task_id: str) -> None:
        await self.redis.hset(RELEASES, f"{name}\n{version}", task_id)

    async def release_ids(self) -> set[str]:
        """Task ids of the current prod releases (retention keeps them)."""
        return {v.decode() if isinstance(v, bytes) else str(v) for v in await self.redis.hvals(RELEASES)}
