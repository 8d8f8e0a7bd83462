"""Artifact store for Redis mode: files on a directory every process shares.

Artifact bytes stay on disk (``LocalArtifactStore`` under ``<shared-dir>/artifacts``): builds
can produce hundreds of megabytes, which do not belong in Redis's memory. Across machines that
directory must be shared storage (NFS, a mounted volume). The release index (name owners, prod
and branch pointers) is in Redis: ``releases.RedisReleases``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flow_kit_cloudbuild.server.storage.artifacts import LocalArtifactStore


class SharedArtifactStore(LocalArtifactStore):
    def __init__(self, root: Path, redis: Any, signer: Any = None) -> None:
        super().__init__(root)
        self.redis = redis
        self.signer = signer  # signing.Signer
