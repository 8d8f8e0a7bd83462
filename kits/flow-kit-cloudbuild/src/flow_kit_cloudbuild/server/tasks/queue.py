"""Job queue: task ids waiting for a worker.

One interface (``JobQueue``) with the embedded implementation ``InProcessQueue``: an asyncio
queue served by ``concurrency`` worker coroutines in the server process. A Redis queue can
replace it so that workers on other machines take jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from flow_kit_cloudbuild.server.cancelling import cancel_and_wait

log = logging.getLogger("flow_kit_cloudbuild.server")

Handler = Callable[[str], Awaitable[None]]


class JobQueue(Protocol):
    async def start(self, handler: Handler) -> None:
        """Begin handing queued task ids to ``handler`` (at most ``concurrency`` at once)."""

    async def put(self, task_id: str, group: str = "") -> None:
        """Queue a task id (FIFO) of a group (its token's hash), whose running builds are limited."""

    async def stop(self) -> None:
        """Stop the workers; a handler still running is cancelled."""

    def pending(self) -> int:
        """How many task ids wait for a worker (as last counted)."""

    async def waiting(self) -> int:
        """Count the task ids that wait for a worker now (a shared queue asks its server)."""


class InProcessQueue:
    """``concurrency`` workers taking task ids in order, with at most ``per_group`` running per
    group (the token that submitted them): a queued task whose group is at its limit waits, and
    the tasks of other groups behind it go first."""

    def __init__(self, concurrency: int, per_group: int | None = None) -> None:
        self.concurrency = max(1, concurrency)
        self.per_group = per_group if per_group and per_group > 0 else None
        self._waiting: deque[tuple[str, str]] = deque()  # (task id, group), oldest first
        self._running: dict[str, int] = {}                # group -> its tasks running now
        self._changed = asyncio.Event()                   # set when a task is queued or ends
        self._workers: list[asyncio.Task[None]] = []

    async def start(self, handler: Handler) -> None:
        self._workers = [asyncio.create_task(self._work(handler), name=f"cloudbuild-worker-{i}")
                         for i in range(self.concurrency)]

    def _take(self) -> tuple[str, str] | None:
        """The oldest waiting task whose group is under its limit (taken), or None."""
        for i, (task_id, group) in enumerate(self._waiting):
            if self.per_group is None or self._running.get(group, 0) < self.per_group:
                del self._waiting[i]
                self._running[group] = self._running.get(group, 0) + 1
                return task_id, group
        return None

    async def _work(self, handler: Handler) -> None:
        while True:
            taken = self._take()
            while taken is None:  # no await between a failed take and clear: no wake-up is lost
                self._changed.clear()
                await self._changed.wait()
                taken = self._take()
            task_id, group = taken
            try:
                await handler(task_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # a handler bug must not kill the worker
                log.exception("worker failed on task %s", task_id)
            finally:
                left = self._running.get(group, 1) - 1
                if left > 0:
                    self._running[group] = left
                else:
                    self._running.pop(group, None)
                self._changed.set()

    async def put(self, task_id: str, group: str = "") -> None:
        self._waiting.append((task_id, group))
        self._changed.set()

    async def stop(self) -> None:
        await cancel_and_wait(*self._workers)
        self._workers = []

    def pending(self) -> int:
        return len(self._waiting)

    async def waiting(self) -> int:
        return len(self._waiting)
