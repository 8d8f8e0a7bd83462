"""Artifact store for Redis mode: files on a directory every process shares, or in S3.

Artifact bytes never go into Redis (builds can produce hundreds of megabytes): they are in
``<shared-dir>/artifacts`` (``LocalArtifactStore``; across machines that directory must be
shared storage, NFS or a mounted volume), or with ``--store s3://bucket/prefix`` in the bucket
(``storage.objects.S3ObjectStore``), which every process reaches with no shared directory.
The release index (name owners, prod and branch pointers) is in Redis: ``releases.RedisReleases``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flow_kit_cloudbuild.server.storage.artifacts import LocalArtifactStore
from flow_kit_cloudbuild.server.storage.objects import ObjectStore


class SharedArtifactStore(LocalArtifactStore):
    def __init__(self, root: Path, redis: Any, signer: Any = None, objects: ObjectStore | None = None) -> None:
        super().__init__(root, objects)
        self.redis = redis
        self.signer = signer  # signing.Signer
