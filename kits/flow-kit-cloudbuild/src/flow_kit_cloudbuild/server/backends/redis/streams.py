"""Gateway side of Redis mode: the task streams its watchers need, read once per process.

Every message of a task is in its Redis stream (``flowcb:task:<id>:log``, entry id ``<seq>-0``,
``store.RedisTaskStore.append``), whoever made it. So a gateway needs no second copy: one
reader loop (``StreamReader``) runs XREAD BLOCK over the streams of the tasks its Socket.IO
watchers and dashboard pages watch (``bus.Hub``), each after the last entry it read, and hands
each message, under the task's local lock, to the hub, which sends it to every watcher whose
last seq is below it (a watcher that joined from a replay may be ahead of the reader). A
process that begins to watch a task wakes the blocked XREAD through its own wake stream
(``flowcb:wake:<process id>``), so the new stream is read at once rather than after ``BLOCK``.

A socket that reads slower than the build prints is not waited for (the reader serves every
task of the gateway): the hub takes it off the live messages and it catches up from the stream
at its own pace (``Hub.deliver``), so the gateway holds at most ``BACKLOG_LIMIT`` messages for it.

If Redis lost a watched task (restarted without persistence) and no worker writes it again
within ``grace`` seconds, the reader ends it with a "failed" message after the watchers' last
seq (``_close_lost``), so no client waits forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.backends.redis.stopping import stop_tasks
from flow_kit_cloudbuild.server.backends.redis.store import key, message_of
from flow_kit_cloudbuild.server.tasks.bus import Hub

log = logging.getLogger("flow_kit_cloudbuild.server")
BLOCK_MS = 5000          # how long one XREAD waits for news (the wake stream cuts it short)
READ_COUNT = 64          # entries one XREAD returns per stream
# messages a replay reads from a stream at once (each up to 64 KiB). Small: a socket that reads
# nothing holds its replay at the first backpressure check with this batch in memory, and 40
# attaches of an 18 MB log grew a gateway by 67-75 MB with 16 at a time, 28-41 MB with 4
# (test_cloudbuild_redis_quotas, on a loaded machine); the extra round trips cost a replay little
REPLAY_BATCH = 4
LOST_CHECK_EVERY = 5.0   # seconds between two looks for watched tasks Redis lost
WAKE_MAXLEN = 16


class StreamReader:
    """One XREAD BLOCK loop over the streams of the tasks this gateway's hub watches."""

    def __init__(self, redis: Any, hub: Hub, store: Any, process_id: str, grace: float) -> None:
        self.redis, self.hub, self.store, self.grace = redis, hub, store, grace
        self.wake_key = f"flowcb:wake:{process_id}"
        self._cursors: dict[str, str] = {}      # task -> last entry id read from its stream
        self._wake_from = "0-0"                 # the wake stream's old entries are read once, harmless
        self._waking: set[asyncio.Task[None]] = set()
        self._missing_since: dict[str, float] = {}
        self._last_news: dict[str, float] = {}
        self._loop_task: asyncio.Task[None] | None = None

    def watch(self, task_id: str, seq: int) -> None:
        """The hub's ``on_watch``: read ``task_id``'s stream after ``seq`` from now on."""
        if task_id not in self._cursors:
            self._cursors[task_id] = f"{seq}-0"
            self._last_news[task_id] = time.monotonic()
            waking = asyncio.ensure_future(self._wake())
            self._waking.add(waking)
            waking.add_done_callback(self._waking.discard)

    async def _wake(self) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {"w": "1"}, maxlen=WAKE_MAXLEN, approximate=True)
                pipe.expire(self.wake_key, 3600)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis away: the next XREAD round picks the stream up
            log.debug("waking the stream reader: %s", exc)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="cloudbuild-stream-reader")

    async def stop(self) -> None:
        await stop_tasks(self._loop_task)

    async def _run(self) -> None:
        delay, checked = 0.2, time.monotonic()
        while True:
            try:
                await self._read_once()
                delay = 0.2
                if time.monotonic() - checked > LOST_CHECK_EVERY:
                    checked = time.monotonic()
                    await self._check_lost()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis unreachable: retry; the reader must outlive it
                log.warning("stream reader: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _read_once(self) -> None:
        watched = set(self.hub.watched())
        for task_id in [t for t in self._cursors if t not in watched]:
            del self._cursors[task_id]
            self._last_news.pop(task_id, None)
            self._missing_since.pop(task_id, None)
        streams = {key(t, "log"): cursor for t, cursor in self._cursors.items()}
        streams[self.wake_key] = self._wake_from
        got = await self.redis.xread(streams, count=READ_COUNT, block=BLOCK_MS)
        for stream, entries in got or []:
            if stream == self.wake_key:
                self._wake_from = entries[-1][0]
                continue
            task_id = stream[len("flowcb:task:"):-len(":log")]
            if task_id not in self._cursors:
                continue
            self._last_news[task_id] = time.monotonic()
            async with self.hub.locks.get(task_id):
                for entry_id, fields in entries:
                    await self.hub.deliver(task_id, message_of(entry_id, fields))
                    self._cursors[task_id] = entry_id
            if task_id not in self.hub.watchers:  # its final message: nobody is left to read for
                self._cursors.pop(task_id, None)

    # -- a task Redis lost ---------------------------------------------------------------------
    async def _check_lost(self) -> None:
        now = time.monotonic()
        for task_id in list(self._cursors):
            if now - self._last_news.get(task_id, now) < LOST_CHECK_EVERY:
                continue  # news lately: it is there
            if await self.store.last_seq(task_id) > 0 or await self.store.get(task_id) is not None:
                self._missing_since.pop(task_id, None)
                continue
            first = self._missing_since.setdefault(task_id, now)
            if now - first > self.grace:
                await self._close_lost(task_id)

    async def _close_lost(self, task_id: str) -> None:
        """Redis lost this task (restarted without persistence) and no worker brought it back."""
        floor = max((w.last for w in self.hub.watchers.get(task_id, {}).values()), default=0)
        self.store.continue_after(task_id, floor)
        self._missing_since.pop(task_id, None)
        await self.store.append(
            task_id, protocol.STATE_FAILED,
            "the build service lost this task's state (Redis restarted without its data) and no "
            "worker is running it; publish again", step="queued")
        await self.store.close(task_id)  # the reader delivers the message like any other


class RedisBus(Hub):
    """The hub of a Redis-mode process: fed by its ``StreamReader`` (None in a worker, which
    serves no watchers); ``publish`` does nothing, the stream is the delivery."""

    reader: StreamReader | None = None

    async def start(self) -> None:
        if self.reader is not None:
            self.reader.start()

    async def stop(self) -> None:
        if self.reader is not None:
            await self.reader.stop()
        await super().stop()

    async def publish(self, task_id: str, msg: dict[str, Any]) -> None:
        """Stored in the task's stream already: the gateways' readers pass it on."""

    async def flush(self, limit: float) -> None:
        """A worker has no sockets; a gateway's sockets are flushed like the embedded ones."""
        if self.reader is not None:
            await super().flush(limit)


def make_bus(redis: Any, sio: Any, gate: Any, store: Any, locks: Any, *, serves_clients: bool,
             process_id: str, grace: float) -> RedisBus:
    """The bus of one Redis-mode process: with a stream reader when it serves clients."""
    bus = RedisBus(sio, gate, store, locks, wait_for_slow=False, replay_batch=REPLAY_BATCH)
    if serves_clients:
        reader = StreamReader(redis, bus, store, process_id, grace)
        bus.reader, bus.on_watch = reader, reader.watch
    return bus
