"""Job queue: task ids waiting for a worker.

One interface (``JobQueue``) with the embedded implementation ``InProcessQueue``: an asyncio
queue served by ``concurrency`` worker coroutines in the server process. A Redis queue can
replace it so that workers on other machines take jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger("flow_kit_cloudbuild.server")

Handler = Callable[[str], Awaitable[None]]


class JobQueue(Protocol):
    async def start(self, handler: Handler) -> None:
        """Begin handing queued task ids to ``handler`` (at most ``concurrency`` at once)."""

    async def put(self, task_id: str) -> None:
        """Queue a task id (FIFO)."""

    async def stop(self) -> None:
        """Stop the workers; a handler still running is cancelled."""

    def pending(self) -> int:
        """How many task ids wait for a worker."""


class InProcessQueue:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = max(1, concurrency)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []

    async def start(self, handler: Handler) -> None:
        self._workers = [asyncio.create_task(self._work(handler), name=f"cloudbuild-worker-{i}")
                         for i in range(self.concurrency)]

    async def _work(self, handler: Handler) -> None:
        while True:
            task_id = await self._queue.get()
            try:
                await handler(task_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # a handler bug must not kill the worker
                log.exception("worker failed on task %s", task_id)
            finally:
                self._queue.task_done()

    async def put(self, task_id: str) -> None:
        self._queue.put_nowait(task_id)

    async def stop(self) -> None:
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        self._workers = []

    def pending(self) -> int:
        return self._queue.qsize()
