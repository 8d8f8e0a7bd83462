"""The message bus: how a task's stored messages reach the sockets that watch it.

One interface (``MessageBus``) with two implementations, one per mode:
``backends.embedded.RoomBus`` (the Socket.IO rooms of this process, with backpressure) and
``backends.redis.RedisBus`` (published to every gateway, each passing it on in seq order).
The service calls ``publish`` under the task's lock (``TaskLocks``), right after the store gave
the message its seq; ``attach`` replays what is stored and then joins the live messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from . import sio_adapter

BACKPRESSURE_EVERY = 64   # messages between two looks at the watchers' backlog
BACKLOG_LIMIT = 2000      # packets a watcher may have queued before the build waits for it
REPLAY_QUEUE_BYTES = 4 * 1024 * 1024  # bytes queued for a socket before its replay waits for it
FLUSH_LIMIT = 2.0         # seconds a stopping server waits for the sockets to send what is queued


class MessageBus(Protocol):
    async def start(self) -> None:
        """Begin (background work of the bus, if any)."""

    async def publish(self, task_id: str, msg: dict[str, Any]) -> None:
        """Send a stored message to the task's watchers (called under the task's lock)."""

    async def attach(self, sid: str, task_id: str, after_seq: int) -> None:
        """Send the stored messages after ``after_seq`` to socket ``sid``, then the live ones."""

    async def flush(self, limit: float) -> None:
        """Wait (up to ``limit`` s) until what was published has left this process."""

    async def stop(self) -> None:
        """End the bus's background work."""


class TaskLocks:
    """One ``asyncio.Lock`` per task: storing+sending a message and joining a socket to the live
    messages exclude each other, so a watcher gets every message once, in order."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, task_id: str) -> asyncio.Lock:
        lock = self._locks.get(task_id)
        if lock is None:
            lock = self._locks[task_id] = asyncio.Lock()
        return lock

    def drop(self, task_id: str) -> None:
        """Forget a finished task's lock."""
        self._locks.pop(task_id, None)


async def wait_for_socket(sio: Any, eio_sid: str) -> bool:
    """Pace a replay: wait until what is queued for the Engine.IO connection is under
    ``BACKLOG_LIMIT`` packets and ``REPLAY_QUEUE_BYTES``; False once it is gone."""
    seen = -1
    while True:
        size = sio_adapter.queued_packets(sio, eio_sid)
        if size is None:
            return False
        if size != seen:  # a socket that reads nothing costs no more looks at its queue
            seen = size
            if size <= BACKLOG_LIMIT and sio_adapter.queued_bytes(sio, eio_sid) <= REPLAY_QUEUE_BYTES:
                return True
        await asyncio.sleep(0.005)


async def catch_up(replay: Callable[[int], Awaitable[int | None]], after_seq: int) -> int | None:
    """Replay stored messages after ``after_seq`` pass after pass, while the build goes on, until
    a pass finds nothing new; the last seq sent (None: the socket went away). Done without the
    task's lock; the caller then takes it for what came meanwhile and joins the live room."""
    seq = after_seq
    while True:
        sent = await replay(seq)
        if sent is None or sent == seq:
            return sent
        seq = sent


class ReplaySlots:
    """One replay per (socket, task): a new attach of the task on the socket supersedes the replay
    still going (cancelled, its queued packets left as they are), so repeated attaches never
    multiply what is queued for one socket."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, str], asyncio.Task[Any]] = {}

    @contextlib.asynccontextmanager
    async def take(self, sid: str, task_id: str) -> AsyncIterator[None]:
        key = (sid, task_id)
        me = asyncio.current_task()
        previous = self._running.get(key)
        if me is not None:
            self._running[key] = me
        try:
            if previous is not None and previous is not me and not previous.done():
                previous.cancel()
                await asyncio.wait([previous])  # its packets are queued; it sends no more
            yield
        finally:
            if self._running.get(key) is me:
                del self._running[key]


class ReplayPacer:
    """Paces one replay to one socket: before a packet, every ``BACKPRESSURE_EVERY`` packets or
    ``REPLAY_QUEUE_BYTES / 16`` bytes, wait until the socket has read what was queued."""

    def __init__(self, sio: Any, eio_sid: str) -> None:
        self.sio, self.eio_sid = sio, eio_sid
        self.queued, self.pending = 0, BACKPRESSURE_EVERY  # look at the queue before the first

    async def ready(self) -> bool:
        """False once the socket is gone."""
        if self.pending >= BACKPRESSURE_EVERY or self.queued >= REPLAY_QUEUE_BYTES // 16:
            if not await wait_for_socket(self.sio, self.eio_sid):
                return False
            self.queued = self.pending = 0
        return True

    def sent(self, encoded: object) -> None:
        self.queued += len(encoded) if isinstance(encoded, (str, bytes)) else 0
        self.pending += 1
