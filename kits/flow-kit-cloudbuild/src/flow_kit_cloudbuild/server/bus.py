"""The message bus: how a task's stored messages reach the sockets that watch it.

One interface (``MessageBus``) with two implementations, one per mode:
``backends.embedded.RoomBus`` (the Socket.IO rooms of this process, with backpressure) and
``backends.redis.RedisBus`` (published to every gateway, each passing it on in seq order).
The service calls ``publish`` under the task's lock (``TaskLocks``), right after the store gave
the message its seq; ``attach`` replays what is stored and then joins the live messages.
"""

from __future__ import annotations

import asyncio
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
