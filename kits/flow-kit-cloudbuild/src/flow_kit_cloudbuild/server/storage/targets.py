"""Delivery targets: a project's prod release copied to an S3 bucket (a static host or a CDN's origin).

Configured in the server's config file, one table per target::

    [[targets]]
    url = "s3://www-bucket/site"      # where the files go
    project = "mysite"                 # optional: only this project, at the prefix itself
    endpoint-url = "https://..."       # optional: else AWS_ENDPOINT_URL (keys: the AWS variables)

Without ``project`` every project's prod release goes to ``<prefix>/<project>/``. The release
index (storage/releases.py, ``TaskService.promote``) calls ``Targets.on_prod_changed(project,
task_id)`` whenever a project's prod pointer moves: a new prod release, or a rollback. Each
file of that task's artifacts is put with its content type and a Cache-Control header
(long-lived and immutable for content-hashed names, revalidated for the rest, as deployments
are served); then the keys under the target that the release does not hold are deleted, so
after a rollback the target holds exactly the earlier release. Copies of one target run one at
a time (a lock), so two quick changes end with the later one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
from collections.abc import Callable
from typing import Any

from flow_kit_cloudbuild.server.config import PROJECT_RE, Target
from flow_kit_cloudbuild.server.storage.objects import ObjectStore, S3ObjectStore, s3_client

log = logging.getLogger("flow_kit_cloudbuild.server")
HASHED_RE = re.compile(r"[.-](?=[A-Za-z0-9_]*\d)[A-Za-z0-9_]{8,}\.[A-Za-z0-9]{1,8}$")
SPOOL = 8 * 1024 * 1024
IMMUTABLE, REVALIDATE = "public, max-age=31536000, immutable", "no-cache"


def cache_control(name: str) -> str:
    """Cache-Control of a delivered file: a year for content-hashed names, revalidate the rest."""
    return IMMUTABLE if HASHED_RE.search(name) else REVALIDATE


class Targets:
    """Copies prod releases to the configured targets (``on_prod_changed``)."""

    def __init__(self, targets: list[Target], artifacts: Any,
                 content_type: Callable[[str], str] | None = None,
                 stores: dict[Target, ObjectStore] | None = None) -> None:
        import mimetypes

        self.targets = targets
        self.artifacts = artifacts  # storage.artifacts.ArtifactStore
        self.content_type = content_type or (lambda n: mimetypes.guess_type(n)[0] or "application/octet-stream")
        self.stores: dict[Target, ObjectStore] = dict(stores or {})
        self._locks: dict[Target, asyncio.Lock] = {}

    def _store(self, target: Target) -> ObjectStore:
        if target not in self.stores:
            client = None
            if target.endpoint_url:
                import boto3
                from botocore.config import Config

                client = boto3.session.Session().client(
                    "s3", endpoint_url=target.endpoint_url,
                    config=Config(max_pool_connections=32, s3={"addressing_style": "path"}))
            self.stores[target] = S3ObjectStore.from_url(target.url, client or s3_client())
        return self.stores[target]

    async def on_prod_changed(self, project: str, task_id: str) -> None:
        """Copy ``task_id``'s artifacts to every target of ``project`` (its new prod release)."""
        for target in self.targets:
            if target.project is not None and target.project != project:
                continue
            if target.project is None and not PROJECT_RE.match(project):
                continue
            lock = self._locks.setdefault(target, asyncio.Lock())
            async with lock:
                await self._copy(target, project, task_id)

    async def _copy(self, target: Target, project: str, task_id: str) -> None:
        store = self._store(target)
        if target.project is None:
            store = store.child(project)
        listed = await self.artifacts.list(task_id) or []
        names = [a["name"] for a in listed]
        gate = asyncio.Semaphore(16)

        async def put(name: str) -> None:
            async with gate:
                opened = await self.artifacts.open(task_id, name)
                if opened is None:
                    return
                size, chunks = opened
                with tempfile.SpooledTemporaryFile(max_size=SPOOL) as spool:  # large files on disk
                    async for chunk in chunks:
                        spool.write(chunk)
                    spool.seek(0)
                    await store.put_file(name, spool, limit=size, content_type=self.content_type(name),
                                         cache_control=cache_control(name))

        async with asyncio.TaskGroup() as group:
            for name in names:
                group.create_task(put(name))
        keep = set(names)
        for info in await store.list(""):
            if info.key not in keep:
                await store.delete(info.key)
        log.info("delivered %s (task %s, %d files) to %s", project, task_id, len(names), target.url)
