"""Tasks: submit, run, emit, attach, cancel — the server's behaviour without its transport.

Every message of a task goes through ``emit``: stored first (which assigns the next seq), then
sent to the task's room, both under the task's lock. ``attach`` replays stored messages and
joins the room under the same lock, so a client sees every message once, in order.

A replay goes at the pace the socket reads: most of it before taking the lock (a long log must
not hold up the build), the rest under the lock, never more than ``BACKLOG_LIMIT`` packets or
``REPLAY_QUEUE_BYTES`` queued for the socket. A new attach of the same task on the same socket
stops the replay it supersedes, so repeated attaches do not multiply what is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
from typing import Any
from urllib.parse import quote

from .. import protocol
from . import housekeeping, policy
from .artifacts import ArtifactStore
from .config import ServerConfig
from .errors import RequestError, StepFailed
from .pipeline import Paths, Pipeline, TaskChannel
from .process import LogLimitExceeded, kill_orphaned_groups
from .queue import JobQueue
from .sandbox import make_sandbox
from .sources import GitSource
from .store import TaskStore, public_record

log = logging.getLogger("flow_kit_cloudbuild.server")
BACKPRESSURE_EVERY = 64   # messages between two looks at the watchers' backlog
BACKLOG_LIMIT = 2000      # packets a watcher may have queued before the build waits for it
REPLAY_QUEUE_BYTES = 4 * 1024 * 1024  # bytes queued for a socket before its replay waits for it
FLUSH_LIMIT = 2.0         # seconds a stopping server waits for the sockets to send what is queued


class TaskService:
    def __init__(self, cfg: ServerConfig, store: TaskStore, queue: JobQueue,
                 artifacts: ArtifactStore, sio: Any) -> None:
        self.cfg = cfg
        self.store = store
        self.queue = queue
        self.artifacts = artifacts
        self.sio = sio
        self.paths = Paths(cfg.data_dir)
        self.git = GitSource(self.paths.git_cache, cfg.allowed_protocols)
        self.sandbox = make_sandbox(cfg) if cfg.sandbox else None
        self._locks: dict[str, asyncio.Lock] = {}
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._cancel_requested: set[str] = set()
        self._replays: dict[tuple[str, str], asyncio.Task[Any]] = {}  # (sid, taskId) -> its replay
        self._stopping = False
        self._housekeeping: asyncio.Task[None] | None = None
        try:
            from socketio import packet as sio_packet

            self._packet_class, self._event_type = sio.packet_class, sio_packet.EVENT
        except Exception:  # pragma: no cover - an unexpected python-socketio: use plain emit
            self._packet_class, self._event_type = None, None

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        for p in (self.paths.work, self.paths.uploads, self.paths.cache):
            p.mkdir(parents=True, exist_ok=True)
        unfinished = await self.store.unfinished()
        orphans = kill_orphaned_groups(self.paths.work, [r["taskId"] for r in unfinished])
        if orphans:
            log.warning("killed %d build process group(s) left running by a crashed server",
                        len(orphans))
        for record in unfinished:
            await self._finish(record["taskId"], protocol.STATE_FAILED,
                               f"the server restarted while this task was in {record.get('state')}; "
                               "publish again", step=record.get("step") or "queued")
        await self.queue.start(self.run)
        self.start_housekeeping()

    def start_housekeeping(self) -> None:
        """Retention: expired uploads, old tasks and artifacts (housekeeping.py), now and periodically."""
        self._housekeeping = asyncio.create_task(housekeeping.run_periodically(self), name="cloudbuild-retention")

    async def drain(self) -> None:
        """End the running builds while their watchers are still connected.

        Each fails with "the server stopped while this task was in STEP", and that final
        message is on its way to the watchers before this returns: on SIGTERM the server runs
        this before it closes the connections (cli.py), so ``flow publish`` hears the outcome
        instead of trying to reconnect. ``stop`` runs it too (a second time nothing is left).
        """
        self._stopping = True
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        await self.queue.stop()  # running pipelines are cancelled and end as failed
        for task_id in list(self._running):
            with contextlib.suppress(BaseException):
                await self._running[task_id]
        await self._flush(FLUSH_LIMIT)

    async def _flush(self, limit: float) -> None:
        """Wait (up to ``limit`` s) until every socket has sent the packets queued for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while loop.time() < deadline:
            try:  # engineio's per-socket queue: not public API, so never fail because of it
                busy = any(not sock.closed and sock.queue.qsize()
                           for sock in list(self.sio.eio.sockets.values()))
            except Exception:
                busy = False
            if not busy:
                await asyncio.sleep(0.05)  # the writer's last batch: from its hands to the wire
                return
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        await self.drain()
        await self.store.close()

    # -- messages ------------------------------------------------------------------------------
    def _lock(self, task_id: str) -> asyncio.Lock:
        lock = self._locks.get(task_id)
        if lock is None:
            lock = self._locks[task_id] = asyncio.Lock()
        return lock

    async def emit(self, task_id: str, action: str, message: str, **extra: Any) -> dict[str, Any]:
        async with self._lock(task_id):
            msg = await self.store.append(task_id, action, message, **extra)
            await self._send(msg, task_id)
            if msg["meta"]["seq"] % BACKPRESSURE_EVERY == 0:
                await self._wait_for_watchers(task_id)
        return msg

    async def _send(self, msg: dict[str, Any], room: str) -> None:
        """sio.emit(EVENT_MESSAGE, msg, to=room), encoded once and sent without a task per socket.

        AsyncServer.emit spawns a task per recipient and waits for them all; for the one or two
        watchers of a task that overhead is most of the cost of a log line.
        """
        participants = list(self.sio.manager.get_participants("/", room))
        if not participants:
            return
        if self._packet_class is None:
            await self.sio.emit(protocol.EVENT_MESSAGE, msg, to=room)
            return
        encoded = self._packet_class(self._event_type, namespace="/", data=[protocol.EVENT_MESSAGE, msg]).encode()
        for _sid, eio_sid in participants:
            try:
                await self.sio.eio.send(eio_sid, encoded)
            except Exception:  # a socket that went away meanwhile
                pass

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
        try:  # engineio's per-socket queue: not public API, so never fail because of it
            sockets = self.sio.eio.sockets
            worst = 0
            for _sid, eio_sid in self.sio.manager.get_participants("/", task_id):
                sock = sockets.get(eio_sid)
                if sock is not None and not sock.closed:
                    worst = max(worst, sock.queue.qsize())
            return worst
        except Exception:
            return 0

    # -- requests ------------------------------------------------------------------------------
    async def owned(self, task_id: Any, token_hash: str) -> dict[str, Any]:
        """The task's record, if ``token_hash`` created it (else not-found / forbidden)."""
        if not policy.is_id(task_id):
            raise RequestError(protocol.ERROR_NOT_FOUND if isinstance(task_id, str)
                               else protocol.ERROR_BAD_REQUEST, "no such task; check the task id")
        record = await self.store.get(task_id)
        if record is None:
            raise RequestError(protocol.ERROR_NOT_FOUND, f"no task {task_id} on this server; check the task id")
        if not secrets.compare_digest(record.get("tokenHash", ""), token_hash):
            raise RequestError(protocol.ERROR_FORBIDDEN,
                               f"task {task_id} was created with another token; use that token")
        return record

    async def submit(self, data: Any, token_hash: str) -> str:
        req = policy.check_publish(data, self.cfg)
        if req["source"] == "upload":
            self.check_upload(req["uploadId"], token_hash)
        if req["prod"] and not req["force"]:
            existing = await self.artifacts.find_release(req["name"], req["version"])
            if existing:
                raise RequestError(protocol.ERROR_EXISTS,
                                   f"{req['name']} {req['version']} is already released to prod "
                                   f"(task {existing}); publish with force to overwrite it")
        task_id = secrets.token_hex(12)
        if req["source"] == "upload":  # one upload feeds one task; it is deleted when the task ends
            housekeeping.claim_upload(self.paths.uploads, req["uploadId"], task_id)
        try:
            await self.store.create({
                "taskId": task_id, "name": req["name"], "version": req["version"], "state": "queued",
                "step": "queued", "createdAt": protocol.now_ms(), "finishedAt": None, "prod": req["prod"],
                "artifacts": [], "error": None, "tokenHash": token_hash, "request": req, "attempt": 1,
            })
        except BaseException:
            if req["source"] == "upload":
                (self.paths.uploads / f"{req['uploadId']}.task").unlink(missing_ok=True)
            raise
        return task_id

    async def enqueue(self, task_id: str) -> None:
        """Announce the new task (seq 1) and hand it to the queue."""
        record = await self.store.get(task_id)
        req = record["request"] if record else {}
        src = f"{req.get('repo')} at {req.get('ref')}" if req.get("source") == "git" else "an uploaded archive"
        await self.emit(task_id, "queued", f"queued {req.get('name')} {req.get('version')} from {src} "
                                           f"({self.queue.pending()} task(s) ahead)")
        # the group: the queue limits running builds per token (InProcessQueue, RedisStreamQueue)
        await self.queue.put(task_id, group=(record or {}).get("tokenHash", ""))

    def check_upload(self, upload_id: str, token_hash: str) -> None:
        meta = self.paths.uploads / f"{upload_id}.json"
        try:
            owner = json.loads(meta.read_text(encoding="utf-8")).get("tokenHash", "")
        except (OSError, ValueError):
            raise RequestError(protocol.ERROR_NOT_FOUND, f"no upload {upload_id}; upload the source again") from None
        if not secrets.compare_digest(owner, token_hash):
            raise RequestError(protocol.ERROR_FORBIDDEN, "that upload was made with another token; upload again")

    async def replay(self, sid: str, task_id: str, after_seq: int) -> None:
        """Send stored messages after ``after_seq`` to one socket, then join it to the live room.

        Supersedes a replay of the same task to the same socket that is still going.
        """
        key = (sid, task_id)
        me = asyncio.current_task()
        previous = self._replays.get(key)
        if me is not None:
            self._replays[key] = me
        try:
            if previous is not None and previous is not me and not previous.done():
                previous.cancel()
                await asyncio.wait([previous])  # its packets are queued; it sends no more
            await self.sio.leave_room(sid, task_id)
            seq = after_seq
            while True:  # catch up without the lock, while the build goes on
                sent = await self._replay_stored(sid, task_id, seq)
                if sent is None:
                    return  # the socket went away
                if sent == seq:
                    break
                seq = sent
            async with self._lock(task_id):  # what came meanwhile; then live, with nothing between
                if await self._replay_stored(sid, task_id, seq) is None:
                    return
                await self.sio.enter_room(sid, task_id)
        finally:
            if self._replays.get(key) is me:
                del self._replays[key]

    async def _replay_stored(self, sid: str, task_id: str, after_seq: int) -> int | None:
        """Send the stored messages after ``after_seq`` to ``sid`` as fast as it reads them.

        Returns the seq of the last one sent (``after_seq`` if none), None if the socket is gone.
        """
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            return None
        seq, queued, pending = after_seq, 0, BACKPRESSURE_EVERY  # look at the queue before the first
        async for msg in self.store.messages(task_id, after_seq):
            if pending >= BACKPRESSURE_EVERY or queued >= REPLAY_QUEUE_BYTES // 16:
                if not await self._wait_for_socket(eio_sid):
                    return None
                queued = pending = 0
            if self._packet_class is None:
                await self.sio.emit(protocol.EVENT_MESSAGE, msg, to=sid)
            else:
                encoded = self._packet_class(self._event_type, namespace="/",
                                             data=[protocol.EVENT_MESSAGE, msg]).encode()
                try:
                    await self.sio.eio.send(eio_sid, encoded)
                except Exception:  # the socket went away meanwhile
                    return None
                queued += len(encoded) if isinstance(encoded, (str, bytes)) else 0
            pending += 1
            seq = msg["meta"]["seq"]
        return seq

    async def _wait_for_socket(self, eio_sid: str) -> bool:
        """Wait until the socket's queue is under both replay bounds; False once it is gone."""
        seen = -1
        while True:
            try:  # engineio's per-socket queue: not public API, so never fail because of it
                sock = self.sio.eio.sockets.get(eio_sid)
                if sock is None or sock.closed:
                    return False
                queue = sock.queue
                size = queue.qsize()
                if size != seen:  # a socket that reads nothing costs no more looks at its queue
                    seen = size
                    if size <= BACKLOG_LIMIT and sum(
                            len(p.data) for p in list(queue._queue)
                            if isinstance(getattr(p, "data", None), (str, bytes))) <= REPLAY_QUEUE_BYTES:
                        return True
            except Exception:
                return True
            await asyncio.sleep(0.005)

    async def cancel(self, task_id: str, token_hash: str) -> dict[str, Any]:
        record = await self.owned(task_id, token_hash)
        if record["state"] in protocol.FINAL:
            return protocol.ok(state=record["state"])
        self._cancel_requested.add(task_id)
        running = self._running.get(task_id)
        if running is not None:
            running.cancel()
        else:  # still queued: the worker will skip it
            await self._finish(task_id, protocol.STATE_CANCELLED, "cancelled before it started",
                               step=record.get("step") or "queued")
        return protocol.ok()

    # -- running -------------------------------------------------------------------------------
    def channel(self, task_id: str) -> TaskChannel:
        """The pipeline's way to speak for ``task_id``: emit its messages, record its step."""
        return _Channel(self, task_id)

    async def run(self, task_id: str) -> None:
        """Queue handler: run one task's pipeline to a final state."""
        record = await self.store.get(task_id)
        if record is None or record["state"] in protocol.FINAL:
            return
        pipeline = Pipeline(
            task_id=task_id, request=record["request"], attempt=record.get("attempt", 1), cfg=self.cfg,
            paths=self.paths, git=self.git, artifacts=self.artifacts, channel=self.channel(task_id),
            tenant=record.get("tokenHash", ""), sandbox=self.sandbox)
        timeout = record["request"].get("timeout", self.cfg.default_timeout)

        async def body() -> list[dict[str, Any]]:
            async with asyncio.timeout(timeout):
                return await pipeline.run()

        job = asyncio.create_task(body(), name=f"cloudbuild-task-{task_id}")
        self._running[task_id] = job
        if task_id in self._cancel_requested:
            job.cancel()
        try:
            await self._conclude(task_id, record, pipeline, timeout, job)
        finally:
            self._running.pop(task_id, None)
            self._cancel_requested.discard(task_id)
            if not self.cfg.keep_workdirs:
                await asyncio.to_thread(shutil.rmtree, pipeline.dir, True)

    async def _conclude(self, task_id: str, record: dict[str, Any], pipeline: Pipeline,
                        timeout: float, work: asyncio.Task[list[dict[str, Any]]]) -> None:
        """Wait for the pipeline ``work`` and finish the task with its outcome.

        Every service (embedded, Redis worker) ends tasks the same way; only what a
        cancellation means depends on who cancelled, which ``_cancelled`` decides.
        """
        try:
            stored = await work
        except StepFailed as exc:
            await self._finish(task_id, exc.final_state, exc.message, step=pipeline.step)
        except TimeoutError:
            await self._finish(task_id, protocol.STATE_TIMED_OUT,
                               f"the task ran longer than its timeout of {timeout} s and was stopped "
                               f"during {pipeline.step}; make the build faster or pass a longer timeout",
                               step=pipeline.step)
        except LogLimitExceeded as exc:
            await self._finish(task_id, protocol.STATE_FAILED, str(exc), step=pipeline.step)
        except asyncio.CancelledError:
            if await self._cancelled(task_id, pipeline.step):
                raise
        except Exception as exc:
            log.exception("task %s failed unexpectedly", task_id)
            await self._finish(task_id, protocol.STATE_FAILED,
                               f"internal error during {pipeline.step} ({type(exc).__name__}); "
                               "see the server log", step=pipeline.step)
        else:
            base = f"{self.cfg.base_url}{protocol.PATH_ARTIFACTS}{task_id}/"
            artifacts = [{"name": a["name"], "url": base + quote(a["name"]), "size": a["size"]}
                         for a in stored]
            await self._finish(task_id, protocol.STATE_DONE,
                               f"published {len(artifacts)} artifact(s) of {record['name']} {record['version']}",
                               artifactUrl=base, artifacts=artifacts)

    async def _cancelled(self, task_id: str, step: str) -> bool:
        """Finish a task whose pipeline was cancelled; True when the cancellation must go on."""
        if task_id in self._cancel_requested and not self._stopping:
            await self._finish(task_id, protocol.STATE_CANCELLED,
                               f"cancelled by request during {step}", step=step)
            return False
        await self._finish(task_id, protocol.STATE_FAILED,
                           f"the server stopped while this task was in {step}; publish again",
                           step=step)
        return self._stopping

    async def _finish(self, task_id: str, state: str, message: str, *, step: str | None = None,
                      **extra: Any) -> None:
        fields: dict[str, Any] = {"state": state, "finishedAt": protocol.now_ms()}
        payload = dict(extra)
        if state == protocol.STATE_DONE:
            fields["artifacts"] = extra.get("artifacts", [])
        else:
            fields["error"] = message
            payload["step"] = step
            fields["step"] = step
        record = await self.store.update(task_id, **fields)
        upload_id = housekeeping.upload_of(record)
        if upload_id is not None:  # its build is over: the sources go
            housekeeping.delete_upload(self.paths.uploads, upload_id)
        await self.emit(task_id, state, message, **payload)
        await self.store.close(task_id)
        self._locks.pop(task_id, None)


class _Channel:
    """``pipeline.TaskChannel`` of one task of a ``TaskService``."""

    __slots__ = ("service", "task_id")

    def __init__(self, service: TaskService, task_id: str) -> None:
        self.service, self.task_id = service, task_id

    async def emit(self, action: str, message: str, **extra: Any) -> dict[str, Any]:
        return await self.service.emit(self.task_id, action, message, **extra)

    async def set_step(self, step: str) -> None:
        await self.service.store.update(self.task_id, state=step, step=step)


def public(record: dict[str, Any]) -> dict[str, Any]:
    return public_record(record)
