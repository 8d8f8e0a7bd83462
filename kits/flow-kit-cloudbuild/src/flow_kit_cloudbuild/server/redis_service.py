"""Tasks in Redis mode: the ``TaskService`` behaviour spread over gateways and workers.

What differs from the embedded service:

* messages are stored in Redis (``RedisTaskStore``) and published through python-socketio's
  Redis manager to the task's room; each gateway passes them on in seq order
  (``TaskFanout``), and ``replay`` is the fan-out's ``attach``;
* a worker takes a job from the Redis stream queue; the delivery count is the attempt number.
  A retried attempt says so in the log (which attempt, why) and runs in a fresh work dir; past
  ``max_attempts`` the task fails with the reason. A job taken over by another worker (this one
  was unresponsive) is abandoned silently; a job that vanished with Redis's data is carried on;
* cancel sets a key that the worker running the task polls (wherever it runs); a task no
  worker has claimed yet is cancelled at once by an atomic check-and-set;
* publishes of one name, version and channel are serialised by a Redis lock;
* a worker that stops (SIGTERM) leaves its tasks for another worker instead of failing them;
* while no worker is up, gateways tell waiting tasks and fail them after the queue timeout
  (``redis_members``); a worker that resumes a task failed that way stops it quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from typing import Any

from .. import protocol
from . import housekeeping
from .pipeline import Pipeline
from .redis_locks import RedisLocks
from .redis_members import CLOSED
from .redis_queue import current_job
from .service import TaskService

log = logging.getLogger("flow_kit_cloudbuild.server")
CANCEL_POLL = 0.5       # seconds between two looks at a running task's cancel key
EMIT_RETRY_FOR = 60.0   # seconds a worker keeps retrying to store a message while Redis is away


class LockedPipeline(Pipeline):
    """The pipeline whose publish step holds the (name, version, channel) lock."""

    locks: RedisLocks
    owner: str

    async def publish(self) -> list[dict[str, Any]]:
        channel = "prod" if self.req["prod"] else "dev"
        name = f"publish:{self.req['name']}\n{self.req['version']}\n{channel}"

        async def waiting(holder: str) -> None:
            await self._log([f"waiting for another publish of {self.req['name']} {self.req['version']} "
                             f"({channel}) to finish ({holder})"], "stdout")
        async with self.locks.hold(name, self.owner, on_wait=waiting):
            return await super().publish()


class RedisTaskService(TaskService):
    def __init__(self, cfg: Any, store: Any, queue: Any, artifacts: Any, sio: Any, *,
                 emitter: Any, fanout: Any, locks: RedisLocks, worker_id: str, max_attempts: int,
                 shared_dir: Any) -> None:
        super().__init__(cfg, store, queue, artifacts, sio)
        self.emitter = emitter          # an AsyncRedisManager (write-only in a worker)
        self.fanout = fanout            # None in a worker
        self.locks = locks
        self.worker_id = worker_id
        self.max_attempts = max_attempts
        self.paths.uploads = shared_dir / "uploads"   # gateways store them, workers read them
        self.paths.artifacts = shared_dir / "artifacts"
        self._why: dict[str, str] = {}
        self.helpers: list[Any] = []    # redis_members.Presence, NoWorkerWatch: start()/stop()

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        for p in (self.paths.work, self.paths.uploads, self.paths.cache):
            p.mkdir(parents=True, exist_ok=True)
        if self.fanout is not None:
            self.fanout.start()
        for helper in self.helpers:
            await helper.start()
        await self.queue.start(self.run)
        self.start_housekeeping()

    def sweep_guard(self) -> Any:
        """One retention sweep at a time in the whole deployment (housekeeping.run_periodically)."""
        return self.locks.try_hold("housekeeping", f"retention sweep on {self.worker_id}")

    async def stop(self) -> None:
        self._stopping = True
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(BaseException):
                await self._housekeeping
        for helper in reversed(self.helpers):  # a stopping worker is no longer counted at once
            with contextlib.suppress(Exception):
                await helper.stop()
        await self.queue.stop()
        if self.fanout is not None:
            await self.fanout.stop()
        with contextlib.suppress(Exception):
            await self.store.redis.aclose()

    # -- messages ------------------------------------------------------------------------------
    async def emit(self, task_id: str, action: str, message: str, **extra: Any) -> dict[str, Any]:
        async with self._lock(task_id):
            msg = await self._store_message(task_id, action, message, extra)
            with contextlib.suppress(Exception):  # pub/sub is best effort: gateways fill gaps
                await self.emitter.emit(protocol.EVENT_MESSAGE, msg, namespace="/", room=task_id)
        return msg

    async def _store_message(self, task_id: str, action: str, message: str,
                             extra: dict[str, Any]) -> dict[str, Any]:
        """Append, retrying while Redis is unreachable (a build's log must not be cut short)."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + EMIT_RETRY_FOR
        delay = 0.1
        while True:
            try:
                return await self.store.append(task_id, action, message, **extra)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def replay(self, sid: str, task_id: str, after_seq: int) -> None:
        await self.fanout.attach(sid, task_id, after_seq)

    async def enqueue(self, task_id: str) -> None:
        await self.queue.waiting()
        await super().enqueue(task_id)

    async def cancel(self, task_id: str, token_hash: str) -> dict[str, Any]:
        record = await self.owned(task_id, token_hash)
        if record["state"] in protocol.FINAL:
            return protocol.ok(state=record["state"])
        await self.store.request_cancel(task_id)
        message = "cancelled before it started"
        if await self.store.cancel_if_queued(task_id, state=protocol.STATE_CANCELLED,
                                             finishedAt=protocol.now_ms(), error=message):
            self.drop_upload(record)  # as _finish does: the task is over, so are its sources
            await self.emit(task_id, protocol.STATE_CANCELLED, message, step="queued")
            await self.store.close(task_id)
        return protocol.ok()

    def drop_upload(self, record: dict[str, Any] | None) -> None:
        """Delete the upload of a task that ended without ``_finish`` (cancelled or failed while queued)."""
        upload_id = housekeeping.upload_of(record)
        if upload_id is not None:
            housekeeping.delete_upload(self.paths.uploads, upload_id)

    # -- running -------------------------------------------------------------------------------
    async def _notice(self, task_id: str, step: str, text: str) -> None:
        await self.emit(task_id, protocol.ACTION_LOG, text, step=step, stream="stderr", lines=1)

    async def run(self, task_id: str) -> None:
        job = current_job()
        attempt = job.deliveries if job is not None else 1
        if await self.store.claim(task_id, self.worker_id) != "ok":
            return  # unknown or already final (e.g. cancelled while queued)
        record = await self.store.get(task_id)
        if record is None:
            return
        self.store.remember(record)
        step = record.get("step") or "queued"
        if attempt > self.max_attempts:
            await self._finish(task_id, protocol.STATE_FAILED,
                               f"gave up after {self.max_attempts} attempt(s): the worker running this task "
                               f"stopped responding each time (last during {step}); publish again, and ask "
                               "the operator to check the workers", step=step)
            return
        if await self.store.cancel_requested(task_id):
            await self._finish(task_id, protocol.STATE_CANCELLED, f"cancelled by request during {step}", step=step)
            return
        if attempt > 1:
            await self._notice(task_id, step,
                               f"the worker running attempt {attempt - 1} stopped responding during {step}; "
                               f"retrying from the start in a fresh work directory (attempt {attempt} of "
                               f"{self.max_attempts})")
        await self.store.update(task_id, attempt=attempt, worker=self.worker_id, state="queued", step="queued")
        await self._notice(task_id, "queued", f"running on worker {self.worker_id} "
                                              f"(attempt {attempt} of {self.max_attempts})")
        await self._run_pipeline(task_id, record, attempt, job)

    async def _run_pipeline(self, task_id: str, record: dict[str, Any], attempt: int, job: Any) -> None:
        pipeline = LockedPipeline(
            task_id=task_id, request=record["request"], attempt=attempt, cfg=self.cfg,
            paths=self.paths, git=self.git, artifacts=self.artifacts, channel=self.channel(task_id),
            tenant=record.get("tokenHash", ""), sandbox=self.sandbox)
        pipeline.locks, pipeline.owner = self.locks, f"task {task_id} on {self.worker_id}"
        timeout = record["request"].get("timeout", self.cfg.default_timeout)

        async def body() -> list[dict[str, Any]]:
            async with asyncio.timeout(timeout):
                return await pipeline.run()

        work = asyncio.create_task(body(), name=f"cloudbuild-task-{task_id}")
        self._running[task_id] = work

        def lost(how: str) -> None:
            if how == "taken":  # another worker runs it now: stop without a word
                self._why[task_id] = "taken"
                work.cancel()
            else:
                log.warning("task %s: its job vanished from the queue (Redis lost data?); carrying on", task_id)
        if job is not None:
            job.on_lost = lost
        watcher = asyncio.create_task(self._watch_cancel(task_id, work))
        try:
            await self._conclude(task_id, record, pipeline, timeout, work)
        finally:
            watcher.cancel()
            self._running.pop(task_id, None)
            self._why.pop(task_id, None)
            if not self.cfg.keep_workdirs:
                await asyncio.to_thread(shutil.rmtree, pipeline.dir, True)

    async def _cancelled(self, task_id: str, step: str) -> bool:
        why = self._why.get(task_id)
        if why == "cancel":
            await self._finish(task_id, protocol.STATE_CANCELLED,
                               f"cancelled by request during {step}", step=step)
            return False
        if why == "taken":
            log.warning("task %s was taken over by another worker; this attempt stops", task_id)
            return False
        if why == CLOSED:
            log.warning("task %s was failed by a gateway while no worker was seen; this attempt stops", task_id)
            return False
        # this worker is stopping: another worker retries the task
        with contextlib.suppress(Exception):
            await self._notice(task_id, step, f"worker {self.worker_id} is stopping during {step}; "
                                              "another worker will retry this task")
        return True

    async def _watch_cancel(self, task_id: str, work: asyncio.Task[Any]) -> None:
        while not work.done():
            await asyncio.sleep(CANCEL_POLL)
            with contextlib.suppress(Exception):
                flag = await self.store.cancel_flag(task_id)
                if flag is not None:  # asked by a client, or CLOSED: the task already failed
                    self._why[task_id] = CLOSED if flag == CLOSED else "cancel"
                    work.cancel()
                    return
