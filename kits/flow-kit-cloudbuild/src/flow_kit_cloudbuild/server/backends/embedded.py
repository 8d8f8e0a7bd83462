"""The embedded server's parts: one process serves the clients and runs every build.

``RoomBus`` sends each message to the Socket.IO room of its task in this process, with
backpressure (a slow watcher slows the build's pipe instead of growing the server's memory);
``EmbeddedPolicy`` says what starting, cancelling and stopping mean when nothing runs
elsewhere. ``make_service`` assembles them with the file store, the in-process queue and the
local artifact store.

A replay goes at the pace the socket reads: most of it before taking the task's lock (a long
log must not hold up the build), the rest under the lock, never more than ``BACKLOG_LIMIT``
packets or ``REPLAY_QUEUE_BYTES`` queued for the socket. A new attach of the same task on the
same socket stops the replay it supersedes, so repeated attaches do not multiply what is queued.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ... import protocol
from .. import sio_adapter
from ..artifacts import ArtifactStore, LocalArtifactStore
from ..bus import BACKLOG_LIMIT, BACKPRESSURE_EVERY, ReplayPacer, ReplaySlots, TaskLocks, catch_up
from ..config import ServerConfig
from ..queue import InProcessQueue, JobQueue
from ..service import TaskService
from ..store import FileTaskStore, TaskStore


def make_service(cfg: ServerConfig, sio: Any, *, store: TaskStore | None = None, queue: JobQueue | None = None,
                 artifacts: ArtifactStore | None = None) -> TaskService:
    """The ``TaskService`` of an embedded server (parts not given: the defaults under the data dir)."""
    store = store or FileTaskStore(cfg.data_dir / "tasks")
    locks = TaskLocks()
    return TaskService(
        cfg, store=store, queue=queue or InProcessQueue(cfg.concurrency, cfg.builds_per_token),
        artifacts=artifacts or LocalArtifactStore(cfg.data_dir / "artifacts"),
        bus=RoomBus(sio, store, locks), policy=EmbeddedPolicy(), locks=locks)


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


class RoomBus:
    """Messages to the sockets of this process that watch the task (its Socket.IO room)."""

    def __init__(self, sio: Any, store: TaskStore, locks: TaskLocks) -> None:
        self.sio = sio
        self.store = store
        self.locks = locks
        self._replays = ReplaySlots()
        self._encode: Any = None
        try:
            self._encode = sio_adapter.event_encoder(sio)
        except RuntimeError:  # pragma: no cover - an unexpected python-socketio: plain emit
            pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def publish(self, task_id: str, msg: dict[str, Any]) -> None:
        await self._send(msg, task_id)
        if msg["meta"]["seq"] % BACKPRESSURE_EVERY == 0:
            await self._wait_for_watchers(task_id)

    async def flush(self, limit: float) -> None:
        """Wait (up to ``limit`` s) until every socket has sent the packets queued for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while loop.time() < deadline:
            if not sio_adapter.any_queued(self.sio):
                await asyncio.sleep(0.05)  # the writer's last batch: from its hands to the wire
                return
            await asyncio.sleep(0.01)

    async def _send(self, msg: dict[str, Any], room: str) -> None:
        """sio.emit(EVENT_MESSAGE, msg, to=room), encoded once and sent without a task per socket.

        AsyncServer.emit spawns a task per recipient and waits for them all; for the one or two
        watchers of a task that overhead is most of the cost of a log line.
        """
        participants = list(self.sio.manager.get_participants("/", room))
        if not participants:
            return
        if self._encode is None:
            await self.sio.emit(protocol.EVENT_MESSAGE, msg, to=room)
            return
        encoded = self._encode(protocol.EVENT_MESSAGE, msg)
        for _sid, eio_sid in participants:
            await sio_adapter.send_encoded(self.sio, eio_sid, encoded)

    async def _wait_for_watchers(self, task_id: str) -> None:
        """Backpressure: let no watcher fall more than BACKLOG_LIMIT packets behind.

        Socket.IO queues outgoing packets without bound; a build printing faster than a client
        reads would grow that queue (memory) and delay the server's pings behind it until the
        client gives up. Waiting here blocks the build's pipe instead, as a slow terminal would.
        A watcher that stops reading entirely is dropped by the ping timeout, which ends the wait.
        """
        while self._backlog(task_id) > BACKLOG_LIMIT:
            await asyncio.sleep(0.005)

    def _backlog(self, task_id: str) -> int:
        worst = 0
        for _sid, eio_sid in self.sio.manager.get_participants("/", task_id):
            worst = max(worst, sio_adapter.queued_packets(self.sio, eio_sid) or 0)
        return worst

    async def attach(self, sid: str, task_id: str, after_seq: int) -> None:
        """Send stored messages after ``after_seq`` to one socket, then join it to the live room.

        Supersedes a replay of the same task to the same socket that is still going.
        """
        async with self._replays.take(sid, task_id):
            await self.sio.leave_room(sid, task_id)
            seq = await catch_up(lambda after: self._replay_stored(sid, task_id, after), after_seq)
            if seq is None:
                return  # the socket went away
            async with self.locks.get(task_id):  # what came meanwhile; then live, with nothing between
                if await self._replay_stored(sid, task_id, seq) is None:
                    return
                await self.sio.enter_room(sid, task_id)

    async def _replay_stored(self, sid: str, task_id: str, after_seq: int) -> int | None:
        """Send the stored messages after ``after_seq`` to ``sid`` as fast as it reads them.

        Returns the seq of the last one sent (``after_seq`` if none), None if the socket is gone.
        """
        eio_sid = sio_adapter.engineio_sid(self.sio, sid)
        if eio_sid is None:
            return None
        seq, pacer = after_seq, ReplayPacer(self.sio, eio_sid)
        async for msg in self.store.messages(task_id, after_seq):
            if not await pacer.ready():
                return None
            if self._encode is None:
                await self.sio.emit(protocol.EVENT_MESSAGE, msg, to=sid)
                pacer.sent(None)
            else:
                encoded = self._encode(protocol.EVENT_MESSAGE, msg)
                if not await sio_adapter.send_encoded(self.sio, eio_sid, encoded):
                    return None
                pacer.sent(encoded)
            seq = msg["meta"]["seq"]
        return seq
