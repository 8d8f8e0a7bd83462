"""Uploads' life cycle and the retention of finished tasks.

An upload is ``<id>.tar.gz`` plus ``<id>.json`` (its token hash, size, time) in the uploads'
``ObjectStore`` (``Paths.upload_store``: ``<data-dir>/uploads``, or ``uploads/`` under ``--store
s3://...``, which gateways and workers on separate machines all reach). A publish that uses it
*claims* it: ``<id>.task`` (``put_if_absent``, so one upload feeds one task) names
the task. Until then it is *pending* and counts against its token's quota (count and bytes).
When its task ends (any final state) its sources (``.tar.gz``) are deleted; ``.json`` and
``.task`` stay, a few bytes, so that a publish reusing it is told which task used it
(``refused``, not ``not-found``), until the sweep finds the task gone (retention). An upload no
task claimed is deleted after ``upload-retention-hours``.

Directory listings and deletions run in worker threads: the event loop serves every client
meanwhile.

The sweep (at start, then every ``sweep_interval(cfg)`` seconds) also deletes finished tasks
(``tasks/<id>``) and their artifacts once they are older than ``retention-days``; the task of a
current prod release is kept, with its artifacts, for as long as it is the release.

In Redis mode every process runs the sweep, but one at a time: a round starts only under the
Redis lock ``flowcb:lock:housekeeping`` (else it is skipped). It sweeps the Redis store's task
records and logs, and the stored uploads and artifacts; releases come from Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.config import ServerConfig
from flow_kit_cloudbuild.server.errors import RequestError
from flow_kit_cloudbuild.server.policy import is_id
from flow_kit_cloudbuild.server.storage.objects import ObjectStore

log = logging.getLogger("flow_kit_cloudbuild.server")
DAY = 86400.0


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return _parse_json(path.read_bytes())
    except OSError:
        return None


def _parse_json(raw: bytes | None) -> dict[str, Any] | None:
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# -- uploads ------------------------------------------------------------------------------------
# ``store`` is the uploads' ObjectStore (``Paths.upload_store``): the data dir's uploads/ or S3.
async def pending_uploads(store: ObjectStore, token_hash: str) -> tuple[int, int]:
    """(count, bytes) of the token's uploads that no task claimed yet."""
    count = size = 0
    try:
        keys = {o.key for o in await store.list("")}
    except OSError:
        return 0, 0
    for key in keys:
        stem, _, suffix = key.partition(".")
        if suffix != "json" or not is_id(stem) or f"{stem}.task" in keys:
            continue
        data = _parse_json(await store.get_bytes(key))
        if data is None or data.get("tokenHash") != token_hash:
            continue
        count += 1
        size += int(data.get("size") or 0)
    return count, size


async def claim_upload(store: ObjectStore, upload_id: str, task_id: str) -> None:
    """Make ``task_id`` the one task that uses the upload (refused if another task has it): a
    write only the first writer wins (O_EXCL on disk, If-None-Match in S3), so of two publishes
    through two gateways at once one gets it."""
    assert is_id(upload_id) and is_id(task_id)
    if not await store.put_if_absent(f"{upload_id}.task", task_id.encode()):
        raise used_upload(upload_id, await claimant(store, upload_id))


async def unclaim_upload(store: ObjectStore, upload_id: str) -> None:
    """Undo ``claim_upload`` (the task record could not be made)."""
    if is_id(upload_id):
        await store.delete(f"{upload_id}.task")


async def claimant(store: ObjectStore, upload_id: str) -> str | None:
    """The task that claimed the upload; None if none did. ("?" if its claim is unreadable.)"""
    raw = await store.get_bytes(f"{upload_id}.task")
    if raw is None:
        return None
    try:
        task_id = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "?"
    return task_id if is_id(task_id) else "?"


def used_upload(upload_id: str, task_id: str | None) -> RequestError:
    """The refusal of a publish that reuses an upload (``refused``, naming the task)."""
    by = f"task {task_id}" if task_id and task_id != "?" else "another task"
    return RequestError(protocol.ERROR_REFUSED,
                        f"upload {upload_id} was already used by {by}; an upload feeds one task "
                        "only: upload the source again")


async def release_upload(store: ObjectStore, upload_id: str) -> bool:
    """Delete the sources of an upload whose task ended; its record (.json, .task) stays until
    the task is gone. True if there were sources to delete."""
    if not is_id(upload_id) or await store.head(f"{upload_id}.tar.gz") is None:
        return False
    await store.delete(f"{upload_id}.tar.gz")
    return True


async def delete_upload(store: ObjectStore, upload_id: str) -> None:
    if not is_id(upload_id):
        return
    for suffix in (".tar.gz", ".json", ".task"):
        await store.delete(f"{upload_id}{suffix}")


def upload_of(record: dict[str, Any] | None) -> str | None:
    request = (record or {}).get("request") or {}
    upload_id = request.get("uploadId") if request.get("source") == "upload" else None
    return upload_id if is_id(upload_id) else None


# -- the sweep ----------------------------------------------------------------------------------
def sweep_interval(cfg: ServerConfig) -> float:
    """Seconds between sweeps: half the shortest retention, between 1 s and 10 minutes."""
    periods = [cfg.upload_retention_hours * 3600]
    if cfg.retention_days > 0:
        periods.append(cfg.retention_days * DAY)
    return max(1.0, min(600.0, min(periods) / 2))


async def sweep(service: Any, now: float | None = None) -> dict[str, int]:
    """Delete expired uploads, and finished tasks and artifacts past retention. Returns counts."""
    now = time.time() if now is None else now
    counts = {"uploads": await _sweep_uploads(service, now), "tasks": 0}
    if service.cfg.retention_days > 0:
        counts["tasks"] = await _sweep_tasks(service, now - service.cfg.retention_days * DAY)
        counts["cacheEntries"] = await _sweep_build_cache(service, now - service.cfg.retention_days * DAY)
    if counts["uploads"] or counts["tasks"]:
        log.info("retention: deleted %(uploads)d upload(s) and %(tasks)d task(s)", counts)
    return counts


async def _sweep_build_cache(service: Any, cutoff: float) -> int:
    """Build-cache entries not written (built, or reused by a hit) since ``cutoff``: the tasks they
    name are past retention too, so the entries could only miss (storage/build_cache.py)."""
    deleted = 0
    for key, written in await service.paths.build_cache.entries():
        if written < cutoff:
            await service.paths.build_cache.delete_key(key)
            deleted += 1
    return deleted


async def _sweep_uploads(service: Any, now: float) -> int:
    store: ObjectStore = service.paths.upload_store
    cutoff = now - service.cfg.upload_retention_hours * 3600
    # uploads cut off by a crash while they were received (the local spool, Paths.uploads)
    spool: Path = service.paths.uploads
    try:
        parts = await asyncio.to_thread(lambda: [e for e in spool.iterdir()
                                                 if e.name.startswith(".") and e.name.endswith(".part")])
    except OSError:
        parts = []
    for entry in parts:
        if _mtime(entry) < cutoff:
            _unlink(entry)
    deleted = 0
    try:
        listed = await store.list("")
    except OSError:
        return 0
    found: dict[str, dict[str, float]] = {}  # upload id -> {suffix: mtime}
    for info in listed:
        stem, _, suffix = info.key.partition(".")
        if is_id(stem) and suffix in ("tar.gz", "json", "task"):
            found.setdefault(stem, {})[suffix] = info.mtime
    for upload_id, parts_of in found.items():
        if "task" in parts_of:
            task_id = await claimant(store, upload_id)
            if task_id is None or task_id == "?":
                continue
            record = await service.store.get(task_id)
            if record is not None and record.get("state") not in protocol.FINAL:
                continue  # its task still needs it
            if record is not None:  # ended: its sources go, the record of its use stays
                deleted += await release_upload(store, upload_id)
                continue
            if parts_of["task"] >= cutoff:
                continue  # claimed a moment ago: the task record is being made
        elif max(parts_of.get("json", 0.0), parts_of.get("tar.gz", 0.0)) >= cutoff:
            continue
        await delete_upload(store, upload_id)
        deleted += 1
    return deleted


async def _sweep_tasks(service: Any, cutoff: float) -> int:
    """Finished tasks older than ``cutoff`` (seconds since the epoch), except prod releases."""
    from flow_kit_cloudbuild.server.storage.artifacts import LocalArtifactStore
    from flow_kit_cloudbuild.server.tasks.store import FileTaskStore

    store, artifacts = service.store, service.artifacts
    keep = await service.releases.task_ids()  # prod and branch releases (storage/releases.py)
    if hasattr(store, "finished"):
        return await _sweep_redis_tasks(store, artifacts, cutoff, keep)
    if not isinstance(store, FileTaskStore) or not isinstance(artifacts, LocalArtifactStore):
        return 0  # a store this sweep does not know
    deleted = 0
    for d in await asyncio.to_thread(_id_dirs, store.root):
        task_id = d.name
        if task_id in keep:
            continue
        record = await asyncio.to_thread(_read_json, d / "task.json")
        if record is None or record.get("state") not in protocol.FINAL:
            continue
        finished = record.get("finishedAt")
        if not isinstance(finished, (int, float)) or finished / 1000 >= cutoff:
            continue
        await asyncio.to_thread(shutil.rmtree, d, True)
        await artifacts.delete(task_id)
        await store.close(task_id)
        deleted += 1
    # artifacts whose task is gone (e.g. a replaced prod release)
    for task_id, stored in (await artifacts.task_ids()).items():  # the data dir's or S3's
        if task_id not in keep and not (store.root / task_id).exists() and stored < cutoff:
            await artifacts.delete(task_id)
    return deleted


async def _sweep_redis_tasks(store: Any, artifacts: Any, cutoff: float, keep: set[str]) -> int:
    """Redis mode: finished task records and logs (``RedisTaskStore``), artifacts in the shared dir."""
    await store.keep(keep)  # a release's record outlives the store's expiry, as long as it is one
    old: list[str] = []
    async for task_id, state, finished in store.finished():
        if (task_id not in keep and state in protocol.FINAL and isinstance(finished, (int, float))
                and finished / 1000 < cutoff):
            old.append(task_id)
    for task_id in old:
        await store.delete(task_id)
        await artifacts.delete(task_id)
    # artifacts whose task is gone (a replaced prod release, a record Redis lost)
    for task_id, stored in (await artifacts.task_ids()).items():  # the shared dir's or S3's
        if task_id not in keep and stored < cutoff and not await store.exists(task_id):
            await artifacts.delete(task_id)
    return len(old)


async def run_periodically(service: Any) -> None:
    """The sweep at start and then every ``sweep_interval`` seconds, until cancelled.

    ``service.sweep_guard()`` (Redis mode) is an async context manager that yields whether this
    process may sweep now; a round it refuses is skipped.
    """
    interval = sweep_interval(service.cfg)
    guard = getattr(service, "sweep_guard", None)
    while True:
        try:
            if guard is None:
                await sweep(service)
            else:
                async with guard() as mine:
                    if mine:
                        await sweep(service)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let housekeeping stop the server
            log.exception("retention sweep failed; trying again in %.0f s", interval)
        await asyncio.sleep(interval)


def _id_dirs(root: Path) -> list[Path]:
    """The entries of ``root`` named like a task id (listed in a thread: there may be many)."""
    try:
        return [d for d in root.iterdir() if is_id(d.name)]
    except OSError:
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
