"""The embedded server's parts: one process serves the clients and runs every build.

The message bus is a ``bus.Hub`` fed by the service itself: ``emit`` stores a message and hands
it, under the task's lock, to the sockets and dashboard pages that watch the task, with
backpressure (a slow socket slows the build's pipe instead of growing the server's memory).
``EmbeddedPolicy`` says what starting, cancelling and stopping mean when nothing runs
elsewhere. ``make_service`` assembles them with the file store, the in-process queue and the
local artifact store.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.config import ServerConfig
from flow_kit_cloudbuild.server.storage.artifacts import ArtifactStore, LocalArtifactStore
from flow_kit_cloudbuild.server.storage.objects import make_object_store
from flow_kit_cloudbuild.server.tasks.bus import Hub, TaskLocks
from flow_kit_cloudbuild.server.tasks.pipeline import Paths
from flow_kit_cloudbuild.server.tasks.queue import InProcessQueue, JobQueue
from flow_kit_cloudbuild.server.tasks.service import TaskService
from flow_kit_cloudbuild.server.tasks.store import FileTaskStore, TaskStore


def make_service(cfg: ServerConfig, sio: Any, gate: Any, *, store: TaskStore | None = None,
                 queue: JobQueue | None = None, artifacts: ArtifactStore | None = None) -> TaskService:
    """The ``TaskService`` of an embedded server (parts not given: the defaults under the data dir);
    ``gate`` is the ``sio_adapter.SocketGate`` in front of ``sio``."""
    store = store or FileTaskStore(cfg.data_dir / "tasks")
    locks = TaskLocks()
    objects = make_object_store(cfg.store, cfg.data_dir)  # artifacts/ and uploads/ in it
    return TaskService(
        cfg, store=store, queue=queue or InProcessQueue(cfg.concurrency, cfg.builds_per_token),
        artifacts=artifacts or LocalArtifactStore(cfg.data_dir / "artifacts", objects.child("artifacts")),
        bus=Hub(sio, gate, store, locks, wait_for_slow=True), policy=EmbeddedPolicy(), locks=locks,
        paths=Paths(cfg.data_dir, objects))


class EmbeddedPolicy:
    """What running a task means when this process is the only one.

    A task runs once (a restart fails what was running, ``TaskService.start``); a cancel stops
    the running pipeline here, or ends a queued task at once; a stopping server fails its
    builds and, on SIGTERM, delivers their final messages before the connections close.
    """

    drains_on_sigterm = True
    sweep_guard = None      # one process: no other sweep to keep out
    publish_locks = None    # one process: publishes need no lock across processes
    process_id = ""

    def __init__(self) -> None:
        self._cancel_requested: set[str] = set()

    async def begin(self, service: TaskService, task_id: str) -> tuple[dict[str, Any], int] | None:
        record = await service.store.get(task_id)
        if record is None or record["state"] in protocol.FINAL:
            return None
        return record, record.get("attempt", 1)

    def watch(self, service: TaskService, task_id: str, work: asyncio.Task[Any]) -> Any:
        if task_id in self._cancel_requested:
            work.cancel()
        return lambda: self._cancel_requested.discard(task_id)

    async def cancel(self, service: TaskService, record: dict[str, Any]) -> None:
        task_id = record["taskId"]
        self._cancel_requested.add(task_id)
        running = service.running(task_id)
        if running is not None:
            running.cancel()
        else:  # still queued: the worker will skip it
            await service.finish(task_id, protocol.STATE_CANCELLED, "cancelled before it started",
                                 step=record.get("step") or "queued")

    async def cancelled(self, service: TaskService, task_id: str, step: str) -> bool:
        """Finish a task whose pipeline was cancelled; True when the cancellation must go on."""
        if task_id in self._cancel_requested and not service.stopping:
            await service.finish(task_id, protocol.STATE_CANCELLED,
                                 f"cancelled by request during {step}", step=step)
            return False
        await service.finish(task_id, protocol.STATE_FAILED,
                             f"the server stopped while this task was in {step}; publish again",
                             step=step)
        return service.stopping
