"""The dashboard's live log: a task's messages as server-sent events (``/ui/api/tasks/<id>/events``).

Kept apart from ``dashboard.py`` so the way messages reach the page (today: following the store;
issue 21: fed from the bus) changes in one module. ``dash`` is the ``Dashboard``: its ``store``,
``sessions`` (to stop when the session ends) and ``_records`` (to notice a task that ended
without a final message).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import protocol
from .http_headers import SECURITY_HEADERS
from .store import FileTaskStore

POLL = 0.1                       # seconds between two looks at a followed task's messages
BATCH_BYTES = 512 * 1024         # bytes of messages in one server-sent event
PING_EVERY = 15.0
# the start of a stored message line (compact JSON, "meta" then "data"): seq and action unparsed
_HEAD_RE = re.compile(r'\{"meta":\{"timestamp":-?\d+,"taskId":"[0-9a-f]+","seq":(\d+)\},"data":\{"action":"([a-z-]+)"')


class _FileTail:
    """Follows ``messages.jsonl`` by byte offset: raw lines after a seq, never parsed twice."""

    def __init__(self, path: Path, after: int) -> None:
        self.path, self.after, self.pos = path, after, 0

    def read(self, max_bytes: int) -> tuple[list[str], int, bool]:
        """(raw message lines, seq of the last, whether a final message was among them)."""
        size = max_bytes
        while True:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(self.pos)
                    data = fh.read(size)
            except OSError:
                return [], self.after, False
            cut = data.rfind(b"\n") + 1
            if cut or len(data) < size:
                break
            size *= 2  # one message longer than a batch
        lines, final = [], False
        for raw in data[:cut].split(b"\n")[:-1]:
            text = raw.decode("utf-8", "replace")
            head = _HEAD_RE.match(text)
            if head is not None:
                seq, action = int(head.group(1)), head.group(2)
            else:
                try:
                    msg = json.loads(text)
                    seq, action = int(msg["meta"]["seq"]), str(msg["data"]["action"])
                except (ValueError, KeyError, TypeError):
                    break  # a line cut off by a crash: the last one
            if seq <= self.after:
                continue
            lines.append(text)
            self.after = seq
            final = final or protocol.is_final(action)
        self.pos += cut
        return lines, self.after, final


class _StoreTail:
    """Follows any ``TaskStore`` through ``messages(task_id, after_seq)`` (Redis: XRANGE)."""

    def __init__(self, store: Any, task_id: str, after: int) -> None:
        self.store, self.task_id, self.after = store, task_id, after

    async def read(self, max_bytes: int) -> tuple[list[str], int, bool]:
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


def tail_of(store: Any, task_id: str, after: int) -> Any:
    """A reader of ``task_id``'s messages after seq ``after``: the file itself, else the store."""
    if isinstance(store, FileTaskStore):
        return _FileTail(store.root / task_id / "messages.jsonl", after)
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
    tail = tail_of(dash.store, task_id, after)
    loop = asyncio.get_running_loop()
    last_out = last_check = loop.time()
    idle_final = 0
    try:
        await send({"type": "http.response.body", "body": b"retry: 1000\n\n", "more_body": True})
        while not gone.is_set():
            got = tail.read(BATCH_BYTES)
            lines, seq, final = (await got) if asyncio.iscoroutine(got) else got
            now = loop.time()
            if lines:
                chunk = f"id: {seq}\ndata: [{','.join(lines)}]\n\n".encode()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                last_out = now
                if final:
                    await send({"type": "http.response.body", "body": b"event: end\ndata: {}\n\n",
                                "more_body": True})
                    break
                continue
            if now - last_check > 2.0:  # signed out meanwhile? ended without a final message?
                last_check = now
                if await dash.sessions.get(session_key) is None:
                    break
                rec = (await dash._records([task_id])).get(task_id)
                if rec is None or rec.get("state") in protocol.FINAL:
                    idle_final += 1
                    if idle_final >= 2:
                        await send({"type": "http.response.body", "body": b"event: end\ndata: {}\n\n",
                                    "more_body": True})
                        break
            if now - last_out > PING_EVERY:
                await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                last_out = now
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(gone.wait(), POLL)
    except OSError:
        pass
    finally:
        watcher.cancel()
        if not gone.is_set():
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b""})
