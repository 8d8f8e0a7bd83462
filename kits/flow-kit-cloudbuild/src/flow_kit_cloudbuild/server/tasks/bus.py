"""The message bus: how a task's stored messages reach whoever watches it in this process.

Watchers are Socket.IO sockets (``attach``/``watch``) and dashboard pages (``follow``, server-sent
events) alike; ``Hub`` keeps them per task and hands each message to every one, once, in seq
order. Who feeds the hub is the one thing that differs per mode (``backends/``):

* embedded (``backends.embedded.LocalBus``): the service's ``emit`` stores a message and,
  under the task's lock (``TaskLocks``), hands it to the hub; a watcher that does not keep up
  makes the build wait (as a slow terminal would);
* Redis (``backends.redis.streams``): every message is already in the task's stream, so a
  gateway's one reader loop (XREAD BLOCK over the streams of the watched tasks) hands what it
  reads to the hub; a watcher that does not keep up is left to catch up from the stream on its
  own (the reader never waits for one socket).

A watcher joins by replaying the store after its last seq without the lock (a long log must
not hold up live messages), then, under the lock, what came meanwhile, and joins the live
messages with nothing between. Replays to a socket go at the pace it reads
(``sio_adapter.Connection.backlog``): never more than ``BACKLOG_LIMIT`` messages or
``REPLAY_QUEUE_BYTES`` handed to it and not yet written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from flow_kit_cloudbuild import protocol

BACKPRESSURE_EVERY = 64   # messages between two looks at the watchers' backlog
BACKLOG_LIMIT = 2000      # messages a watcher may have pending before the build waits for it
REPLAY_QUEUE_BYTES = 4 * 1024 * 1024  # bytes pending for a socket before its replay waits for it
FLUSH_LIMIT = 2.0         # seconds a stopping server waits for the sockets to send what is pending
FEED_LIMIT = 512          # messages queued for a dashboard page before it reads from the store
FEED_IDLE = 2.0           # seconds a dashboard follow waits before yielding an empty batch
FEED_BATCH_BYTES = 512 * 1024  # bytes of messages a dashboard follow yields at once


class MessageBus(Protocol):
    async def start(self) -> None:
        """Begin (background work of the bus, if any)."""

    async def publish(self, task_id: str, msg: dict[str, Any]) -> None:
        """A message was stored (called under the task's lock)."""

    async def watch(self, sid: str, task_id: str) -> None:
        """Socket ``sid`` follows a task that has no message yet (it published it)."""

    async def attach(self, sid: str, task_id: str, after_seq: int) -> None:
        """Send the stored messages after ``after_seq`` to socket ``sid``, then the live ones."""

    def follow(self, task_id: str, after_seq: int) -> AsyncIterator[list[dict[str, Any]]]:
        """A dashboard page's messages after ``after_seq`` in batches ([] when idle a while)."""

    async def flush(self, limit: float) -> None:
        """Wait (up to ``limit`` s) until what was handed to sockets has left this process."""

    async def stop(self) -> None:
        """End the bus's background work."""


class TaskLocks:
    """One ``asyncio.Lock`` per task: handing a message to the watchers and joining a watcher to
    the live messages exclude each other, so a watcher gets every message once, in order."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, task_id: str) -> asyncio.Lock:
        lock = self._locks.get(task_id)
        if lock is None:
            lock = self._locks[task_id] = asyncio.Lock()
        return lock

    def drop(self, task_id: str) -> None:
        """Forget a finished task's lock."""
        lock = self._locks.get(task_id)
        if lock is not None and not lock.locked():
            del self._locks[task_id]


async def catch_up(replay: Callable[[int], Awaitable[int | None]], after_seq: int) -> int | None:
    """Replay stored messages after ``after_seq`` pass after pass, while the build goes on, until
    a pass finds nothing new; the last seq sent (None: the watcher went away). Done without the
    task's lock; the caller then takes it for what came meanwhile and joins the live messages."""
    seq = after_seq
    while True:
        sent = await replay(seq)
        if sent is None or sent == seq:
            return sent
        seq = sent


def lost_message(task_id: str, seq: int, after: dict[str, Any]) -> dict[str, Any]:
    """Stands in for a message Redis lost (restarted without persistence), keeping seqs gapless.

    The stream is appended in seq order, so a seq missing below one that exists is gone for good.
    """
    step = after["data"]["payload"].get("step") or "queued"
    return protocol.make_message(task_id, seq, protocol.ACTION_LOG,
                                 f"(message {seq} was lost: Redis restarted without its data)",
                                 step=step, stream="stderr", lines=1)


def _size(msg: dict[str, Any]) -> int:
    """About the bytes ``msg`` takes on the wire (its text dominates)."""
    return len(str(msg["data"]["payload"].get("message", ""))) + 256


class SocketWatcher:
    """A Socket.IO session following a task: messages go out with ``sio.emit(..., to=sid)``."""

    def __init__(self, sio: Any, conn: Any, sid: str, last: int) -> None:
        self.sio, self.conn, self.sid, self.last = sio, conn, sid, last
        self.ended = False   # a replay sent the final message: nothing to join

    @property
    def gone(self) -> bool:
        return self.conn is None or self.conn.backlog() is None

    def behind(self) -> bool:
        """Whether more is pending for the socket than a watcher may have."""
        got = self.conn.backlog() if self.conn is not None else None
        return got is not None and (got[0] > BACKLOG_LIMIT or got[1] > REPLAY_QUEUE_BYTES)

    async def send(self, msg: dict[str, Any]) -> bool:
        if self.gone:
            return False
        self.conn.handed(_size(msg))
        await self.sio.emit(protocol.EVENT_MESSAGE, msg, to=self.sid)
        return True

    async def ready(self) -> bool:
        """Pace a replay: wait until the socket has read enough; False once it is gone."""
        while True:
            got = self.conn.backlog() if self.conn is not None else None
            if got is None:
                return False
            if got[0] <= BACKLOG_LIMIT // 2 and got[1] <= REPLAY_QUEUE_BYTES // 2:
                return True
            await asyncio.sleep(0.005)


class FeedWatcher:
    """A dashboard page following a task: a bounded queue its server-sent events read."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(FEED_LIMIT)
        self.overflowed = False   # the page fell behind: it reads from the store, then joins again
        self.closed = False

    @property
    def gone(self) -> bool:
        return self.closed

    def behind(self) -> bool:
        return False

    async def send(self, msg: dict[str, Any]) -> bool:
        if self.closed or self.overflowed:
            return False
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True


Watcher = SocketWatcher | FeedWatcher


class Hub:
    """The watchers of this process, per task, and the way each joins (see the module docstring).

    ``store``: where replays read (``TaskStore.messages``); ``locks``: the tasks' locks, which
    whoever hands a message to ``deliver`` holds; ``gate``: the ``sio_adapter.SocketGate`` that
    finds a session's connection; ``on_watch(task_id, seq)``: told when a task gets its first
    watcher (the Redis reader starts reading its stream after ``seq``); ``wait_for_slow``: a slow
    socket makes ``deliver``'s caller wait (embedded) instead of catching up on its own (Redis).
    """

    def __init__(self, sio: Any, gate: Any, store: Any, locks: TaskLocks, *, wait_for_slow: bool,
                 on_watch: Callable[[str, int], None] | None = None, replay_batch: int | None = None) -> None:
        self.sio, self.gate, self.store, self.locks = sio, gate, store, locks
        self.wait_for_slow = wait_for_slow
        self.on_watch = on_watch or (lambda task_id, seq: None)
        self.replay_batch = replay_batch   # messages one store read returns (Redis: each up to 64 KiB)
        self.watchers: dict[str, dict[Any, Watcher]] = {}
        self._replays: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._background: set[asyncio.Future[Any]] = set()

    async def start(self) -> None:
        """Nothing runs in the background of a plain hub."""

    async def publish(self, task_id: str, msg: dict[str, Any]) -> None:
        """Embedded: the service stored ``msg`` and holds the task's lock; hand it on."""
        await self.deliver(task_id, msg)

    # -- who watches -----------------------------------------------------------------------------
    def watched(self) -> list[str]:
        """The tasks someone here still watches (those whose watchers all left are forgotten)."""
        for task_id in [t for t, ws in self.watchers.items() if all(w.gone for w in ws.values())]:
            del self.watchers[task_id]
        return list(self.watchers)

    def _join(self, task_id: str, key: Any, watcher: Watcher) -> None:
        first = task_id not in self.watchers
        self.watchers.setdefault(task_id, {})[key] = watcher
        if first:
            self.on_watch(task_id, watcher.last)

    def _leave(self, task_id: str, key: Any) -> None:
        ws = self.watchers.get(task_id)
        if ws is not None:
            ws.pop(key, None)
            if not ws:
                del self.watchers[task_id]

    # -- live messages -----------------------------------------------------------------------------
    async def deliver(self, task_id: str, msg: dict[str, Any]) -> None:
        """Hand a stored message to the task's watchers (the caller holds the task's lock)."""
        ws = self.watchers.get(task_id)
        if not ws:
            return
        seq = msg["meta"]["seq"]
        for key, w in list(ws.items()):
            if seq <= w.last:
                continue
            if w.gone:
                ws.pop(key, None)
                continue
            if isinstance(w, SocketWatcher) and not self.wait_for_slow and w.behind():
                ws.pop(key, None)   # it catches up from the store at its own pace, then joins again
                self._replays[(w.sid, task_id)] = self._later(self._rejoin(task_id, w))
                continue
            sent = True
            for lost in range(w.last + 1, seq):  # a hole in the stream never fills: say so
                sent = sent and await w.send(lost_message(task_id, lost, msg))
            if sent and await w.send(msg):
                w.last = seq
            elif isinstance(w, FeedWatcher):
                ws.pop(key, None)   # overflowed: the page reads from the store
        if protocol.is_final(msg["data"]["action"]):
            self.watchers.pop(task_id, None)  # nothing follows a final message
        if self.wait_for_slow and seq % BACKPRESSURE_EVERY == 0:
            await self._wait_for_watchers(task_id, ws)

    async def _wait_for_watchers(self, task_id: str, ws: dict[Any, Watcher]) -> None:
        """Backpressure: let no socket fall more than ``BACKLOG_LIMIT`` messages behind.

        python-socketio queues what it sends without bound; a build printing faster than a
        client reads would grow that queue (memory) and delay the server's pings behind it.
        Waiting here blocks the build's pipe instead, as a slow terminal would. A watcher that
        stops reading is dropped by the ping timeout, which ends the wait.
        """
        while any(isinstance(w, SocketWatcher) and w.behind() for w in ws.values()):
            await asyncio.sleep(0.005)

    def _later(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _rejoin(self, task_id: str, w: SocketWatcher) -> None:
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await self._attach_watcher(task_id, w.sid, w)
        finally:
            if self._replays.get((w.sid, task_id)) is asyncio.current_task():
                del self._replays[(w.sid, task_id)]

    # -- sockets ---------------------------------------------------------------------------------
    async def watch(self, sid: str, task_id: str) -> None:
        async with self.locks.get(task_id):
            self._join(task_id, sid, SocketWatcher(self.sio, self.gate.connection(sid), sid, 0))

    async def attach(self, sid: str, task_id: str, after_seq: int) -> None:
        """Replay after ``after_seq`` to socket ``sid``, then the live messages. A new attach of
        the task on the socket supersedes a replay still going (so repeated attaches never
        multiply what is pending for one socket)."""
        key = (sid, task_id)
        me = asyncio.current_task()
        previous = self._replays.get(key)
        if me is not None:
            self._replays[key] = me
        try:
            if previous is not None and previous is not me and not previous.done():
                previous.cancel()
                await asyncio.wait([previous])
            async with self.locks.get(task_id):
                self._leave(task_id, sid)
            w = SocketWatcher(self.sio, self.gate.connection(sid), sid, after_seq)
            await self._attach_watcher(task_id, sid, w)
        finally:
            if self._replays.get(key) is me:
                del self._replays[key]

    async def _attach_watcher(self, task_id: str, key: Any, w: SocketWatcher) -> None:
        seq = await catch_up(lambda after: self._replay(task_id, w, after), w.last)
        if seq is None:
            return
        async with self.locks.get(task_id):  # what came meanwhile; then live, with nothing between
            sent = await self._replay(task_id, w, seq)
            if sent is None:
                return
            w.last = sent
            if not w.ended:
                self._join(task_id, key, w)

    async def _replay(self, task_id: str, w: SocketWatcher, after_seq: int) -> int | None:
        """Send the stored messages after ``after_seq`` to one socket as fast as it reads them;
        the seq of the last one sent (``after_seq`` if none), None if the socket is gone."""
        seq, pending = after_seq, BACKPRESSURE_EVERY
        async for msg in self._messages(task_id, after_seq):
            if pending >= BACKPRESSURE_EVERY:
                if not await w.ready():
                    return None
                pending = 0
            now = msg["meta"]["seq"]
            for lost in range(seq + 1, now):
                await w.send(lost_message(task_id, lost, msg))
            if not await w.send(msg):
                return None
            pending += 1
            seq = now
            if protocol.is_final(msg["data"]["action"]):
                w.ended = True
        return seq

    def _messages(self, task_id: str, after_seq: int) -> AsyncIterator[dict[str, Any]]:
        if self.replay_batch is None:
            return self.store.messages(task_id, after_seq)
        return self.store.messages(task_id, after_seq, batch=self.replay_batch)

    # -- dashboard pages -------------------------------------------------------------------------
    async def follow(self, task_id: str, after_seq: int) -> AsyncIterator[list[dict[str, Any]]]:
        """Batches of a task's messages after ``after_seq`` for a page: the stored ones, then the
        live ones the hub hands it; [] after ``FEED_IDLE`` s without any (the page's keep-alive).
        Ends after the final message."""
        feed = FeedWatcher(after_seq)
        key = object()
        try:
            while True:
                batch = await self._read(task_id, feed.last)
                if batch:
                    feed.last = batch[-1]["meta"]["seq"]
                    yield batch
                    if protocol.is_final(batch[-1]["data"]["action"]):
                        return
                    continue
                async with self.locks.get(task_id):  # caught up: what came meanwhile, then live
                    rest = await self._read(task_id, feed.last)
                    if not rest:
                        feed.overflowed = False
                        self._join(task_id, key, feed)
                if rest:
                    continue  # more came: read again without the lock
                async for live in self._live(feed):
                    yield live
                    if live and protocol.is_final(live[-1]["data"]["action"]):
                        return
                async with self.locks.get(task_id):
                    self._leave(task_id, key)
        finally:
            feed.closed = True
            self._leave(task_id, key)

    async def _read(self, task_id: str, after_seq: int) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        size = 0
        async for msg in self._messages(task_id, after_seq):
            batch.append(msg)
            size += _size(msg)
            if size >= FEED_BATCH_BYTES or protocol.is_final(msg["data"]["action"]):
                break
        return batch

    @staticmethod
    async def _live(feed: FeedWatcher) -> AsyncIterator[list[dict[str, Any]]]:
        """What the hub hands ``feed`` until it overflows (then the store takes over)."""
        while True:
            try:
                first = await asyncio.wait_for(feed.queue.get(), FEED_IDLE)
            except TimeoutError:
                if feed.overflowed:
                    return
                yield []
                continue
            batch = [first]
            while not feed.queue.empty():
                batch.append(feed.queue.get_nowait())
            yield batch
            if feed.overflowed and feed.queue.empty():
                return

    # -- stopping --------------------------------------------------------------------------------
    async def flush(self, limit: float) -> None:
        """Wait (up to ``limit`` s) until every socket has written what was handed to it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while loop.time() < deadline:
            if not self.gate.any_in_flight():
                await asyncio.sleep(0.05)  # the ASGI server's last write: from its hands to the wire
                return
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        tasks = list(self._background) + list(self._replays.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
