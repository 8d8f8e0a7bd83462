"""Redis mode's run policy: how the task service runs tasks when gateways and workers are
separate processes (assembled with the other Redis parts by ``backends.redis.make_service``).

What differs from the embedded server:

* messages are stored in Redis (``RedisTaskStore``, which retries while Redis is unreachable),
  in the task's stream, which is also how they travel: each gateway's stream reader passes them
  on to its watchers (``streams.StreamReader``, ``streams.RedisBus``);
* a worker takes a job from the Redis stream queue; the delivery count is the attempt number.
  A retried attempt says so in the log (which attempt, why) and runs in a fresh work dir; past
  ``max_attempts`` the task fails with the reason. A job taken over by another worker (this one
  was unresponsive) is abandoned silently; a job that vanished with Redis's data is carried on;
* cancel sets a key that the worker running the task polls (wherever it runs); a task no
  worker has claimed yet is cancelled at once by an atomic check-and-set;
* publishes of one name, version and channel are serialised by a Redis lock;
* a worker that stops (SIGTERM) leaves its tasks for another worker instead of failing them;
* while no worker is up, gateways tell waiting tasks and fail them after the queue timeout
  (``members.NoWorkerWatch``); a worker that resumes a task failed that way stops it quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.backends.redis.locks import RedisLocks
from flow_kit_cloudbuild.server.backends.redis.members import CLOSED
from flow_kit_cloudbuild.server.backends.redis.queue import current_job

log = logging.getLogger("flow_kit_cloudbuild.server")
CANCEL_POLL = 0.5       # seconds between two looks at a running task's cancel key


class RedisPolicy:
    """Running tasks when workers come and go (see the module docstring)."""

    drains_on_sigterm = False   # a stopping worker's tasks are another worker's to retry

    def __init__(self, *, locks: RedisLocks, worker_id: str, max_attempts: int) -> None:
        self.publish_locks = locks
        self.process_id = worker_id
        self.max_attempts = max_attempts
        self._why: dict[str, str] = {}   # task -> why its pipeline was cancelled here

    def sweep_guard(self) -> Any:
        """One retention sweep at a time in the whole deployment (housekeeping.run_periodically)."""
        return self.publish_locks.try_hold("housekeeping", f"retention sweep on {self.process_id}")

    async def begin(self, service: Any, task_id: str) -> tuple[dict[str, Any], int] | None:
        store = service.store
        job = current_job()
        attempt = job.deliveries if job is not None else 1
        if await store.claim(task_id, self.process_id) != "ok":
            return None  # unknown or already final (e.g. cancelled while queued)
        record = await store.get(task_id)
        if record is None:
            return None
        store.remember(record)
        step = record.get("step") or "queued"
        if attempt > self.max_attempts:
            await service.finish(task_id, protocol.STATE_FAILED,
                                 f"gave up after {self.max_attempts} attempt(s): the worker running this task "
                                 f"stopped responding each time (last during {step}); publish again, and ask "
                                 "the operator to check the workers", step=step)
            return None
        if await store.cancel_requested(task_id):
            await service.finish(task_id, protocol.STATE_CANCELLED, f"cancelled by request during {step}", step=step)
            return None
        if attempt > 1:
            await service.notice(task_id, step,
                                 f"the worker running attempt {attempt - 1} stopped responding during {step}; "
                                 f"retrying from the start in a fresh work directory (attempt {attempt} of "
                                 f"{self.max_attempts})")
        await store.update(task_id, attempt=attempt, worker=self.process_id, state="queued", step="queued")
        await service.notice(task_id, "queued", f"running on worker {self.process_id} "
                                                f"(attempt {attempt} of {self.max_attempts})")
        return record, attempt

    def watch(self, service: Any, task_id: str, work: asyncio.Task[Any]) -> Callable[[], None]:
        job = current_job()

        def lost(how: str) -> None:
            if how == "taken":  # another worker runs it now: stop without a word
                self._why[task_id] = "taken"
                work.cancel()
            else:
                log.warning("task %s: its job vanished from the queue (Redis lost data?); carrying on", task_id)
        if job is not None:
            job.on_lost = lost
        watcher = asyncio.create_task(self._watch_cancel(service, task_id, work))

        def unwatch() -> None:
            watcher.cancel()
            self._why.pop(task_id, None)
        return unwatch

    async def _watch_cancel(self, service: Any, task_id: str, work: asyncio.Task[Any]) -> None:
        while not work.done():
            await asyncio.sleep(CANCEL_POLL)
            with contextlib.suppress(Exception):
                flag = await service.store.cancel_flag(task_id)
                if flag is not None:  # asked by a client, or CLOSED: the task already failed
                    self._why[task_id] = CLOSED if flag == CLOSED else "cancel"
                    work.cancel()
                    return

    async def cancel(self, service: Any, record: dict[str, Any]) -> None:
        task_id = record["taskId"]
        await service.store.request_cancel(task_id)
        message = "cancelled before it started"
        if await service.store.cancel_if_queued(task_id, state=protocol.STATE_CANCELLED,
                                                finishedAt=protocol.now_ms(), error=message):
            await service.drop_upload(record)  # as finish does: the task is over, so are its sources
            await service.emit(task_id, protocol.STATE_CANCELLED, message, step="queued")
            await service.store.close(task_id)

    async def cancelled(self, service: Any, task_id: str, step: str) -> bool:
        why = self._why.get(task_id)
        if why == "cancel":
            await service.finish(task_id, protocol.STATE_CANCELLED,
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
            await service.notice(task_id, step, f"worker {self.process_id} is stopping during {step}; "
                                                "another worker will retry this task")
        return True
