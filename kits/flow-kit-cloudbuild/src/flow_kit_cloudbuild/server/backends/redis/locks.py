"""A lock on Redis that expires if its holder dies: ``SET key token NX PX ttl``, refreshed while
held, released only by its holder (compare-and-delete). Used to serialise publishes of the same
name, version and channel across workers, and to let one process at a time run the retention
sweep (``try_hold``: skip the round when another process holds it)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from flow_kit_cloudbuild.server.backends.redis.stopping import stop_tasks

_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLocks:
    def __init__(self, redis: Any, ttl: float = 10.0) -> None:
        self.redis = redis
        self.ttl_ms = int(ttl * 1000)
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)

    @contextlib.asynccontextmanager
    async def hold(self, name: str, owner: str,
                   on_wait: Callable[[str], Awaitable[None]] | None = None) -> AsyncIterator[None]:
        """Hold lock ``name`` for the block; waits (polling) while another owner holds it.

        ``on_wait(holder)`` is called once when the lock is busy. The caller bounds the wait
        (the task's timeout); a dead holder's lock expires after the TTL.
        """
        key = f"flowcb:lock:{name}"
        token = f"{owner}:{secrets.token_hex(4)}"
        told = False
        while not await self.redis.set(key, token, nx=True, px=self.ttl_ms):
            if not told and on_wait is not None:
                holder = await self.redis.get(key)
                await on_wait(str(holder or "?").rsplit(":", 1)[0])
                told = True
            await asyncio.sleep(0.1)
        async with self._kept(key, token):
            yield

    @contextlib.asynccontextmanager
    async def try_hold(self, name: str, owner: str) -> AsyncIterator[bool]:
        """Hold lock ``name`` for the block if it is free (yields True), else yield False at once."""
        key = f"flowcb:lock:{name}"
        token = f"{owner}:{secrets.token_hex(4)}"
        if not await self.redis.set(key, token, nx=True, px=self.ttl_ms):
            yield False
            return
        async with self._kept(key, token):
            yield True

    @contextlib.asynccontextmanager
    async def _kept(self, key: str, token: str) -> AsyncIterator[None]:
        """The lock ``key`` held with ``token`` is kept alive for the block, then released."""
        keeper = asyncio.create_task(self._keep(key, token))
        try:
            yield
        finally:
            await stop_tasks(keeper)
            with contextlib.suppress(Exception):
                await self._release(keys=[key], args=[token])

    async def _keep(self, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            with contextlib.suppress(Exception):
                await self._refresh(keys=[key], args=[token, self.ttl_ms])
