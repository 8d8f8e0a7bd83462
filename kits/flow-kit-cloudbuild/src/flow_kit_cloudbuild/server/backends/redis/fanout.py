"""Gateway side of Redis mode: task messages to this process's sockets, in seq order, once.

Workers publish each task message through python-socketio's Redis manager (a write-only
``AsyncRedisManager``) to the room named by the task id; every gateway's manager
(``sio_adapter.redis_manager_class``) receives it and hands it to ``TaskFanout.on_emit``.
Redis pub/sub delivers at most once and may reorder against a replay, so a gateway does not
pass task messages on blindly: it keeps, per watching socket, the last seq it sent, and

* sends a message whose seq is the next one; drops one it already sent;
* fills a gap (a message lost while the gateway's subscription was reconnecting, or a replay
  racing live messages) from the task's stream in Redis, which holds every message;
* every second, compares each watched task's last seq in Redis with what its sockets got, and
  fills from the stream (so a lost final message cannot leave a client waiting);
* closes a task whose record vanished (Redis lost its data) for longer than the grace time
  with a final "failed" message after the client's last seq.

``attach`` replays like the embedded bus (backends/embedded.py): at the pace the socket reads, never
more than ``BACKLOG_LIMIT`` packets or ``REPLAY_QUEUE_BYTES`` queued for it. The socket leaves
the room and has no cursor while it catches up from the stream without the task's lock (a long
log must not hold up live messages to other sockets); then, under the lock, it gets what came
meanwhile, its cursor is set to the last seq sent and it joins the room, so a reattaching client
gets everything after its ``afterSeq`` exactly once, in order, and live messages after it. A new
attach of the same task on the same socket stops the replay it supersedes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from .... import protocol
from ... import sio_adapter
from ...bus import ReplayPacer, ReplaySlots, catch_up
from ...policy import is_id
from .stopping import stop_tasks

log = logging.getLogger("flow_kit_cloudbuild.server")
SWEEP_EVERY = 1.0
REPLAY_BATCH = 16   # messages a replay reads from the stream at once (each up to 64 KiB)


class TaskFanout:
    def __init__(self, sio: Any, store: Any, grace: float) -> None:
        self.sio = sio
        self.store = store
        self.grace = grace
        self._cursors: dict[str, dict[str, int]] = {}   # task -> sid -> last seq sent
        self._locks: dict[str, asyncio.Lock] = {}
        self._missing_since: dict[str, float] = {}
        self._replays = ReplaySlots()
        self._sweeper: asyncio.Task[None] | None = None
        encode = sio_adapter.event_encoder(sio)
        self._packet = lambda msg: encode(protocol.EVENT_MESSAGE, msg)

    async def on_emit(self, event: Any, room: Any, data: Any) -> bool:
        """The manager's hook (``sio_adapter.redis_manager_class``): a task message from Redis
        goes through ``deliver``; True when it was one (python-socketio delivers anything else)."""
        if event == protocol.EVENT_MESSAGE and is_id(room) and isinstance(data, list) and len(data) == 1:
            await self.deliver(room, data[0])
            return True
        return False

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="cloudbuild-fanout-sweep")

    async def stop(self) -> None:
        await stop_tasks(self._sweeper)

    def _lock(self, task_id: str) -> asyncio.Lock:
        return self._locks.setdefault(task_id, asyncio.Lock())

    def _watchers(self, task_id: str) -> list[tuple[str, str]]:
        try:
            return list(self.sio.manager.get_participants("/", task_id))
        except KeyError:
            return []

    async def attach(self, sid: str, task_id: str, after_seq: int) -> None:
        """Replay the stream after ``after_seq`` to one socket, paced, then join it to the room."""
        async with self._replays.take(sid, task_id):
            async with self._lock(task_id):  # out of the room: live messages skip it meanwhile
                await self.sio.leave_room(sid, task_id)
                self._cursors.get(task_id, {}).pop(sid, None)
            eio_sid = sio_adapter.engineio_sid(self.sio, sid)
            if eio_sid is None:
                return
            seq = await catch_up(lambda after: self._replay(task_id, eio_sid, after), after_seq)
            if seq is None:
                return  # the socket went away
            async with self._lock(task_id):  # what came meanwhile; then live, with nothing between
                sent = await self._replay(task_id, eio_sid, seq)
                if sent is None:
                    return
                self._cursors.setdefault(task_id, {})[sid] = sent
                await self.sio.enter_room(sid, task_id)

    async def _replay(self, task_id: str, eio_sid: str, after_seq: int) -> int | None:
        """Send the stream after ``after_seq`` to one socket as fast as it reads.

        Returns the seq of the last message sent (``after_seq`` if none), None if the socket is gone.
        """
        seq, pacer = after_seq, ReplayPacer(self.sio, eio_sid)
        async for msg in self.store.messages(task_id, after_seq, batch=REPLAY_BATCH):
            if not await pacer.ready():
                return None
            now = msg["meta"]["seq"]
            packets = [self._packet(_lost_message(task_id, lost, msg)) for lost in range(seq + 1, now)]
            packets.append(self._packet(msg))  # a hole in the stream never fills: it was said above
            for encoded in packets:
                if not await sio_adapter.send_encoded(self.sio, eio_sid, encoded):
                    return None
                pacer.sent(encoded)
            seq = now
        return seq

    async def deliver(self, task_id: str, msg: dict[str, Any]) -> None:
        if not self._watchers(task_id):
            return
        async with self._lock(task_id):
            watchers = self._watchers(task_id)  # under the lock: a replay that just joined is in it
            cursors = self._cursors.setdefault(task_id, {})
            seq = msg["meta"]["seq"]
            behind = []
            encoded = None
            for sid, eio_sid in watchers:
                last = cursors.get(sid, 0)
                if seq <= last:
                    continue
                if seq == last + 1:
                    encoded = encoded or self._packet(msg)
                    await self._send(eio_sid, encoded)
                    cursors[sid] = seq
                else:
                    behind.append((sid, eio_sid))
            if behind:
                await self._fill(task_id, behind, seq)

    async def _fill(self, task_id: str, watchers: list[tuple[str, str]], upto: int | None) -> None:
        """Send each watcher what it lacks from the stream (through ``upto``, or to the end)."""
        cursors = self._cursors.setdefault(task_id, {})
        start = min(cursors.get(sid, 0) for sid, _ in watchers)
        async for msg in self.store.messages(task_id, start):
            seq = msg["meta"]["seq"]
            if upto is not None and seq > upto:
                break
            encoded = None
            for sid, eio_sid in watchers:
                last = cursors.get(sid, 0)
                if last >= seq:
                    continue
                for lost in range(last + 1, seq):  # a hole in the stream never fills: say so
                    await self._send(eio_sid, self._packet(_lost_message(task_id, lost, msg)))
                encoded = encoded or self._packet(msg)
                await self._send(eio_sid, encoded)
                cursors[sid] = seq

    async def _send(self, eio_sid: str, encoded: Any) -> None:
        await sio_adapter.send_encoded(self.sio, eio_sid, encoded)  # False: it went away meanwhile

    # -- the safety net ------------------------------------------------------------------------
    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            for task_id in list(self._cursors):
                try:
                    await self._check(task_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - Redis unreachable: next round; the sweep must outlive it
                    log.debug("fan-out sweep of %s: %s", task_id, exc)

    async def _check(self, task_id: str) -> None:
        watchers = self._watchers(task_id)
        cursors = self._cursors.get(task_id, {})
        live = {sid for sid, _ in watchers}
        for sid in [s for s in cursors if s not in live]:
            cursors.pop(sid, None)
        if not watchers:
            self._cursors.pop(task_id, None)
            if not self._lock(task_id).locked():  # a replay may be about to join
                self._locks.pop(task_id, None)
            self._missing_since.pop(task_id, None)
            return
        last = await self.store.last_seq(task_id)
        behind = [(sid, eio) for sid, eio in watchers if cursors.get(sid, 0) < last]
        if behind:
            async with self._lock(task_id):
                await self._fill(task_id, behind, None)
        if last == 0 and await self.store.get(task_id) is None:
            first = self._missing_since.setdefault(task_id, time.monotonic())
            if time.monotonic() - first > self.grace:
                await self._close_lost(task_id, max(cursors.get(sid, 0) for sid, _ in watchers))
        else:
            self._missing_since.pop(task_id, None)

    async def _close_lost(self, task_id: str, floor: int) -> None:
        """Redis lost this task (restarted without persistence) and no worker brought it back."""
        self.store.continue_after(task_id, floor)
        msg = await self.store.append(
            task_id, protocol.STATE_FAILED,
            "the build service lost this task's state (Redis restarted without its data) and no "
            "worker is running it; publish again", step="queued")
        self._missing_since.pop(task_id, None)
        await self.deliver(task_id, msg)
        await self.store.close(task_id)


def _lost_message(task_id: str, seq: int, after: dict[str, Any]) -> dict[str, Any]:
    """Stands in for a message Redis lost (restarted without persistence), keeping seqs gapless.

    The stream is appended in seq order, so a seq missing below one that exists is gone for good.
    """
    step = after["data"]["payload"].get("step") or "queued"
    return protocol.make_message(task_id, seq, protocol.ACTION_LOG,
                                 f"(message {seq} was lost: Redis restarted without its data)",
                                 step=step, stream="stderr", lines=1)


class RedisBus:
    """Publish to every gateway (``emitter``: an ``AsyncRedisManager``, write-only in a worker);
    a gateway's ``fanout`` (None in a worker) passes messages on to its sockets and attaches them."""

    def __init__(self, emitter: Any, fanout: Any) -> None:
        self.emitter = emitter
        self.fanout = fanout

    async def start(self) -> None:
        if self.fanout is not None:
            self.fanout.start()

    async def stop(self) -> None:
        if self.fanout is not None:
            await self.fanout.stop()

    async def publish(self, task_id: str, msg: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # pub/sub is best effort: gateways fill gaps
            await self.emitter.emit(protocol.EVENT_MESSAGE, msg, namespace="/", room=task_id)

    async def attach(self, sid: str, task_id: str, after_seq: int) -> None:
        await self.fanout.attach(sid, task_id, after_seq)

    async def flush(self, limit: float) -> None:
        """Nothing waits here: the gateways hold what their clients have not read yet."""
