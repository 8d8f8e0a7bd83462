"""Job queue on a Redis stream with a consumer group: at-least-once delivery to workers.

The Redis implementation of ``queue.JobQueue``. Why a consumer group (and not a list, or a job
library): Redis itself keeps, per job, which worker holds it, since when (idle time) and how
often it was handed out (delivery count) — exactly the three facts that at-least-once delivery
needs — and ``XAUTOCLAIM`` hands a job whose holder went quiet to another worker atomically.
Nothing here is a protocol of our own; the whole state can be read with ``XPENDING``.

* ``put``: ``XADD flowcb:jobs * task <id>``.
* each of ``concurrency`` consumer loops first ``XAUTOCLAIM``s a job idle for longer than the
  heartbeat timeout (its worker died), else ``XREADGROUP``s a new one (blocking 1 s);
* while the handler runs, a heartbeat ``XCLAIM ... JUSTID``s the job to its own consumer every
  ``heartbeat/4`` s, which resets the idle time without counting a delivery — but only while the
  job is still ours (a Lua script checks the owner first, so a worker that paused never takes a
  job back from the one that took it over);
* ``XACK`` when the handler returned. A worker stopped with SIGTERM leaves its jobs unacked:
  another worker picks them up after the timeout.

The handler sees the job as ``current_job()`` (delivery count = attempt number; ``lost`` says
whether the job was taken over by another worker or vanished with Redis's data).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("flow_kit_cloudbuild.server")

STREAM = "flowcb:jobs"
GROUP = "workers"
Handler = Callable[[str], Awaitable[None]]

# owner check + heartbeat: 1 = still ours (idle reset), 0 = another consumer holds it, -1 = gone
_HEARTBEAT = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 then return -1 end
if p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""


@dataclass
class Job:
    entry_id: str
    task_id: str
    deliveries: int
    lost: str | None = None                     # None | "taken" | "gone"
    on_lost: Callable[[str], None] | None = field(default=None, repr=False)


_current: contextvars.ContextVar[Job | None] = contextvars.ContextVar("cloudbuild_job", default=None)


def current_job() -> Job | None:
    """The job whose handler is running in this context (None outside a queue handler)."""
    return _current.get()


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisStreamQueue:
    def __init__(self, redis: Any, consumer: str, *, concurrency: int, heartbeat_timeout: float,
                 consume: bool = True) -> None:
        self.redis = redis
        self.consumer = consumer
        self.concurrency = max(1, concurrency)
        self.heartbeat_timeout = heartbeat_timeout
        self.consume = consume
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._loops: list[asyncio.Task[None]] = []
        self._pending = 0

    # -- JobQueue ------------------------------------------------------------------------------
    async def start(self, handler: Handler) -> None:
        if not self.consume:
            return
        with contextlib.suppress(Exception):  # Redis down at start: the loops retry
            await self._ensure_group()
        self._loops = [asyncio.create_task(self._loop(handler), name=f"cloudbuild-consumer-{i}")
                       for i in range(self.concurrency)]

    async def put(self, task_id: str) -> None:
        await self.redis.xadd(STREAM, {"task": task_id})

    async def stop(self) -> None:
        for t in self._loops:
            t.cancel()
        for t in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._loops = []

    def pending(self) -> int:
        return self._pending

    async def waiting(self) -> int:
        """Jobs no worker has taken yet (the group's lag)."""
        with contextlib.suppress(Exception):
            for g in await self.redis.xinfo_groups(STREAM):
                if _s(g.get("name", g.get(b"name", b""))) == GROUP:
                    self._pending = int(g.get("lag") or 0)
                    return self._pending
        return self._pending

    # -- consuming -------------------------------------------------------------------------------
    async def _ensure_group(self) -> None:
        from redis.exceptions import ResponseError

        try:
            await self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _loop(self, handler: Handler) -> None:
        delay = 0.2
        while True:
            try:
                job = await self._next()
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis unreachable or restarted without the group
                if "NOGROUP" in str(exc):
                    with contextlib.suppress(Exception):
                        await self._ensure_group()
                else:
                    log.warning("job queue: %s; retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                continue
            if job is None:
                continue
            await self._handle(job, handler)

    async def _next(self) -> Job | None:
        idle_ms = int(self.heartbeat_timeout * 1000)
        claimed = await self.redis.xautoclaim(STREAM, GROUP, self.consumer, idle_ms, "0-0", count=1)
        entries = claimed[1] if claimed else []
        for deleted in (claimed[2] if len(claimed) > 2 else []):  # trimmed away: nothing to run
            await self.redis.xack(STREAM, GROUP, deleted)
        if not entries:
            got = await self.redis.xreadgroup(GROUP, self.consumer, {STREAM: ">"}, count=1, block=1000)
            entries = got[0][1] if got else []
        if not entries:
            return None
        entry_id, fields = entries[0]
        entry_id = _s(entry_id)
        task_id = _s(fields.get(b"task") or fields.get("task") or "")
        info = await self.redis.xpending_range(STREAM, GROUP, min=entry_id, max=entry_id, count=1)
        deliveries = int(info[0]["times_delivered"]) if info else 1
        return Job(entry_id, task_id, deliveries)

    async def _handle(self, job: Job, handler: Handler) -> None:
        token = _current.set(job)
        beat = asyncio.create_task(self._beat(job))
        try:
            await handler(job.task_id)
        except asyncio.CancelledError:
            raise  # stopping: the job stays unacked and is retried elsewhere
        except Exception:
            log.exception("worker failed on task %s", job.task_id)
        else:
            if job.lost is None:
                with contextlib.suppress(Exception):
                    await self.redis.xack(STREAM, GROUP, job.entry_id)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            _current.reset(token)

    async def _beat(self, job: Job) -> None:
        every = max(0.2, self.heartbeat_timeout / 4)
        while True:
            await asyncio.sleep(every)
            try:
                state = int(await self._heartbeat(keys=[STREAM], args=[GROUP, self.consumer, job.entry_id]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if "NOGROUP" not in str(exc):
                    continue  # Redis unreachable: try again; the job's idle time keeps growing
                state = -1
            if state == 1:
                continue
            job.lost = "taken" if state == 0 else "gone"
            if job.on_lost is not None:
                job.on_lost(job.lost)
            return
