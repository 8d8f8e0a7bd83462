"""Artifact store for Redis mode: files on a directory every process shares, releases in Redis.

Artifact bytes stay on disk (``LocalArtifactStore`` under ``<shared-dir>/artifacts``): builds
can produce hundreds of megabytes, which do not belong in Redis's memory. Across machines that
directory must be shared storage (NFS, a mounted volume). Only the prod release index moves to
Redis (hash ``flowcb:releases``), so that "is name+version released?" and "record this release"
are single atomic commands that every worker sees at once. A release's value is
``<task id> <signature>`` (``signing.Signer``): one written into Redis without the server secret
is no release, so it cannot block a name's prod publish ("exists") or claim it for a task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flow_kit_cloudbuild.server.storage.artifacts import LocalArtifactStore

RELEASES = "flowcb:releases"


class SharedArtifactStore(LocalArtifactStore):
    def __init__(self, root: Path, redis: Any, signer: Any = None) -> None:
        super().__init__(root)
        self.redis = redis
        self.signer = signer  # signing.Signer; None: releases are neither signed nor checked

    async def find_release(self, name: str, version: str) -> str | None:
        got = await self.redis.hget(RELEASES, f"{name}\n{version}")
        if got is None:
            return None
        task_id, _, sig = str(got).partition(" ")
        if self.signer is not None and not self.signer.check(sig, "release", name, version, task_id):
            return None  # not this deployment's: as if unreleased (a prod publish replaces it)
        return task_id

    async def record_release(self, name: str, version: str, task_id: str) -> None:
        value = task_id if self.signer is None else f"{task_id} {self.signer.sign('release', name, version, task_id)}"
        await self.redis.hset(RELEASES, f"{name}\n{version}", value)

    async def release_ids(self) -> set[str]:
        """Task ids of the current prod releases (retention keeps them). Unsigned values count
        too: keeping a task longer is the safe mistake, and releases recorded before signatures
        existed stay kept."""
        return {v.partition(" ")[0] for v in await self.redis.hvals(RELEASES)}
