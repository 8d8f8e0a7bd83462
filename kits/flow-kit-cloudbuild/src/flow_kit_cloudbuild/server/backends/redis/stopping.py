"""Stopping the background loops of Redis mode (consumers, heartbeats, presence, lock keepers).

Each of them talks to Redis, and a cancel that lands in redis-py while it reads a reply can be
swallowed: the command is retried and the loop goes on (redis/redis-py#2028). A plain
``task.cancel(); await task`` then waits for ever; ``stop_tasks`` cancels again until each has
ended.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def stop_tasks(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` (None: nothing to stop) and wait until every one has ended; those still
    running are cancelled again every half second. What they ended with is not raised: they are
    being stopped."""
    running = [t for t in tasks if t is not None]
    while running:
        for t in running:
            t.cancel()
        done, pending = await asyncio.wait(running, timeout=0.5)
        for t in done:
            if not t.cancelled():
                t.exception()  # retrieved: asyncio would log it as never retrieved
        running = list(pending)
