"""Ending what a coroutine started, without losing a cancel aimed at the coroutine itself.

A coroutine that starts helper tasks (a command's output readers, the disk watch beside a build,
the two halves of a proxied connection) cancels them when it ends and waits until they have,
so nothing it started outlives it. The short way to write that wait,
``with suppress(BaseException): await t``, also swallows a cancel of the coroutine that lands
while it waits; the coroutine then goes on as if never cancelled. For a pipeline that meant a
cancelled or timed-out build could carry on to its next step, or end "done" and be released.

Here the wait goes on to its end whatever lands meanwhile (what was started must stop first:
it may be killing a process group or removing a cgroup), and a cancel that landed is raised
afterwards. This is the rule of structured concurrency (trio's and anyio's cancel scopes,
asyncio's TaskGroup): a cleanup is not interrupted, and a cancel is never dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def run_to_end(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` to its end even if the caller is cancelled meanwhile, then raise that
    cancel; otherwise return what it returned (or raise what it raised)."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True  # remembered, raised once the task has ended
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the caller's cancel wins over what the task ended with
        raise asyncio.CancelledError
    return task.result()


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` (None: nothing started) and wait until every one has ended.

    What they ended with is not raised (they are being stopped); a cancel of the caller that
    lands while they end is raised once they have.
    """
    started = [t for t in tasks if t is not None]
    for t in started:
        t.cancel()
    await wait_ended(*started)


async def wait_ended(*tasks: asyncio.Future[Any]) -> None:
    """Wait until every one of ``tasks`` has ended, without cancelling them or raising what they
    ended with; a cancel of the caller that lands meanwhile is raised once they have."""
    if not tasks:
        return
    try:
        await run_to_end(asyncio.wait(tasks))
    finally:
        for t in tasks:
            if t.done() and not t.cancelled():
                t.exception()  # retrieved, so asyncio does not log it as never retrieved
