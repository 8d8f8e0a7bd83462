"""The Redis job queue on its own, against a real redis-server: a dead worker's job is taken
over however many running jobs sit before it in the consumer group's pending list, and the
stream keeps only the jobs that have not run (each is deleted when acked)."""

from __future__ import annotations

import asyncio

from cloudbuild_redis_support import needs_redis

from flow_kit_cloudbuild.server.backends.redis.queue import GROUP, STREAM, RedisStreamQueue

pytestmark = [needs_redis]

HEARTBEAT = 1.0


def test_a_dead_workers_job_behind_a_dozen_running_ones_is_taken_over(redis_server):
    """XAUTOCLAIM with COUNT 1 scans at most 10 pending entries per call: a rescuer that always
    starts from the beginning of the list never reaches the 13th."""

    async def scenario() -> list[str]:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        release = asyncio.Event()
        running: list[str] = []

        async def busy(task_id: str) -> None:  # a healthy worker's long builds
            running.append(task_id)
            await release.wait()

        alive = RedisStreamQueue(r, "alive", concurrency=12, heartbeat_timeout=HEARTBEAT)
        await alive.start(busy)
        for i in range(12):
            await alive.put(f"running-{i}")
        for _ in range(100):
            if len(running) == 12:
                break
            await asyncio.sleep(0.05)
        assert len(running) == 12
        # A worker that took the next job and died at once: pending, never acked, no heartbeat.
        await alive.put("orphan")
        got = await r.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=1)
        assert got and got[0][1][0][1]["task"] == "orphan"

        rescued: list[str] = []
        done = asyncio.Event()

        async def rescue(task_id: str) -> None:
            rescued.append(task_id)
            done.set()

        rescuer = RedisStreamQueue(r, "rescuer", concurrency=1, heartbeat_timeout=HEARTBEAT)
        await rescuer.start(rescue)
        try:
            await asyncio.wait_for(done.wait(), timeout=10 * HEARTBEAT)
        except TimeoutError:
            pass
        release.set()
        await rescuer.stop()
        await alive.stop()
        await r.aclose()
        return rescued

    assert asyncio.run(scenario()) == ["orphan"]


def test_the_jobs_stream_keeps_only_jobs_that_have_not_run(redis_server):
    """Each job runs once; once acked its entry is deleted, so ``flowcb:jobs`` does not grow
    with every publish (issue 21), while a job nobody has read yet stays."""

    async def scenario() -> tuple[list[str], int, int]:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        await r.delete(STREAM)
        ran: list[str] = []

        async def run(task_id: str) -> None:
            ran.append(task_id)

        worker = RedisStreamQueue(r, "trim", concurrency=2, heartbeat_timeout=HEARTBEAT)
        await worker.start(run)
        for i in range(50):
            await worker.put(f"job-{i}")
        for _ in range(200):
            if len(ran) == 50 and await r.xlen(STREAM) == 0:
                break
            await asyncio.sleep(0.05)
        after_run = await r.xlen(STREAM)
        await worker.stop()
        idle = RedisStreamQueue(r, "idle", concurrency=1, heartbeat_timeout=HEARTBEAT, consume=False)
        await idle.put("waiting")  # nobody reads it: it stays
        waiting = await r.xlen(STREAM)
        await r.aclose()
        return ran, after_run, waiting

    ran, after_run, waiting = asyncio.run(scenario())
    assert sorted(ran) == sorted(f"job-{i}" for i in range(50))  # each once
    assert after_run == 0, f"{after_run} acked jobs left in the stream"
    assert waiting == 1
