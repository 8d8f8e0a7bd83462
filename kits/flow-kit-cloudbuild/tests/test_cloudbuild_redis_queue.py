"""The Redis job queue on its own, against a real redis-server: a dead worker's job is taken
over however many running jobs sit before it in the consumer group's pending list."""

from __future__ import annotations

import asyncio

import pytest
from cloudbuild_redis_support import needs_redis, redis_server  # noqa: F401 - redis_server: a fixture

from flow_kit_cloudbuild.server.backends.redis.queue import GROUP, STREAM, RedisStreamQueue

pytestmark = [needs_redis]

HEARTBEAT = 1.0


def test_a_dead_workers_job_behind_a_dozen_running_ones_is_taken_over(redis_server):
    """XAUTOCLAIM with COUNT 1 scans at most 10 pending entries per call: a rescuer that always
    starts from the beginning of the list never reaches the 13th."""

    async def scenario() -> list[str]:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(redis_server.url)
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
        assert got and got[0][1][0][1][b"task"] == b"orphan"

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
