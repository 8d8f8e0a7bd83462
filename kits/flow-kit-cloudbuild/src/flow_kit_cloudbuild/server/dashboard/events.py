"""The dashboard's live log: a task's messages as server-sent events (``/ui/api/tasks/<id>/events``).

A page is a watcher of the task like a Socket.IO socket: ``events`` reads ``bus.follow``, which
replays the store after the page's last seq and then hands it the live messages the bus
delivers (embedded: as the service stores them; Redis: as the gateway's stream reader reads
them), so nothing here polls the store or reads ``messages.jsonl`` on the event loop. ``dash``
is the ``Dashboard``: its ``service`` (the bus), ``sessions`` (to stop when the session ends)
and ``_records`` (to notice a task that ended without a final message). ``tail_of`` reads a
whole log for the download, through the store (file reads in worker threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.http.headers import SECURITY_HEADERS

BATCH_BYTES = 512 * 1024         # bytes of messages in one read of the download
PING_EVERY = 15.0
CHECK_EVERY = 2.0                # seconds between two looks at the session and the record


class _StoreTail:
    """Reads any ``TaskStore`` through ``messages(task_id, after_seq)`` (Redis: XRANGE)."""

    def __init__(self, store: Any, task_id: str, after: int) -> None:
        self.store, self.task_id, self.after = store, task_id, after

    async def read(self, max_bytes: int) -> tuple[list[str], int, bool]:
        """(message lines, seq of the last, whether a final message was among them)."""
        lines, size, final = [], 0, False
        async for msg in self.store.messages(self.task_id, self.after):
            seq = int(msg["meta"]["seq"])
            if seq <= self.after:
                continue
            text = json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
            lines.append(text)
            size += len(text)
            self.after = seq
            if protocol.is_final(str(msg["data"]["action"])):
                final = True
                break
            if size >= max_bytes:
                break
        return lines, self.after, final


def tail_of(store: Any, task_id: str, after: int) -> _StoreTail:
    """A reader of ``task_id``'s messages after seq ``after`` (``await tail.read(max_bytes)``)."""
    return _StoreTail(store, task_id, after)


async def events(dash: Any, receive: Callable, send: Callable, record: dict[str, Any], after: int,
                 session_key: str) -> None:
    """Server-sent events: each event is a JSON array of messages; its id the last seq."""
    task_id = record["taskId"]
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
        (b"x-accel-buffering", b"no"), *SECURITY_HEADERS]})
    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                return
    watcher = asyncio.ensure_future(watch())
    follow = dash.service.bus.follow(task_id, after)
    loop = asyncio.get_running_loop()
    last_out = last_check = loop.time()
    idle_final = 0
    end = {"type": "http.response.body", "body": b"event: end\ndata: {}\n\n", "more_body": True}
    try:
        await send({"type": "http.response.body", "body": b"retry: 1000\n\n", "more_body": True})
        while not gone.is_set():
            next_batch = asyncio.ensure_future(anext(follow, None))
            await asyncio.wait((next_batch, watcher), return_when=asyncio.FIRST_COMPLETED)
            if not next_batch.done():
                next_batch.cancel()
                break  # the page went away
            batch = next_batch.result()
            now = loop.time()
            if batch is None:  # the final message was sent
                await send(end)
                break
            if batch:
                seq = batch[-1]["meta"]["seq"]
                lines = ",".join(json.dumps(m, ensure_ascii=False, separators=(",", ":")) for m in batch)
                await send({"type": "http.response.body", "body": f"id: {seq}\ndata: [{lines}]\n\n".encode(),
                            "more_body": True})
                last_out = now
                if protocol.is_final(str(batch[-1]["data"]["action"])):
                    await send(end)
                    break
                continue
            if now - last_check > CHECK_EVERY:  # signed out meanwhile? ended without a final message?
                last_check = now
                if await dash.sessions.get(session_key) is None:
                    break
                rec = (await dash._records([task_id])).get(task_id)
                if rec is None or rec.get("state") in protocol.FINAL:
                    idle_final += 1
                    if idle_final >= 2:
                        await send(end)
                        break
            if now - last_out > PING_EVERY:
                await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                last_out = now
    except OSError:
        pass
    finally:
        watcher.cancel()
        with contextlib.suppress(Exception):
            await follow.aclose()
        if not gone.is_set():
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b""})
