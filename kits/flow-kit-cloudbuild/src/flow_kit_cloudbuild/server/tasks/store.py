"""Task store: task records and every task's messages, in order, on disk.

One interface (``TaskStore``) with the embedded implementation ``FileTaskStore``: a directory
per task under ``<data>/tasks/<taskId>/`` holding ``task.json`` (the record, replaced
atomically) and ``messages.jsonl`` (one message per line, appended and flushed as it is made).
A restart therefore keeps all history. Task ids are server-made hex strings, checked before
they are ever joined to a path.

**Change events.** A store calls its ``listeners`` after each record it wrote: ``("created",
record)`` and ``("updated", record)`` with the record as stored. Whoever keeps something derived
from records (the dashboard's index of tasks per token) subscribes by appending to the list,
instead of wrapping ``create``/``update``; a listener's failure is logged and never fails the
write (a publish must not fail because of the dashboard).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from flow_kit_cloudbuild import protocol
from flow_kit_cloudbuild.server.policy import is_id
from flowcore.api import atomic_write_bytes

#: Record fields that a client may see (GET /api/tasks/{id}, attach ack).
PUBLIC_FIELDS = protocol.TASK_FIELDS
#: The seq of a stored line without parsing it (lines are written compact, "meta" first).
_SEQ_RE = re.compile(r'\{"meta":\{"timestamp":-?\d+,"taskId":"[0-9a-f]+","seq":(\d+)\}')
_SEQ_RE_BYTES = re.compile(_SEQ_RE.pattern.encode())
READ_BATCH_BYTES = 1024 * 1024  # bytes of a log read at once by a replay (a worker thread's turn)
T = TypeVar("T")
#: A store's change event: ("created" | "updated", the record as stored).
TaskListener = Callable[[str, dict[str, Any]], Awaitable[None]]
CREATED, UPDATED = "created", "updated"
log = logging.getLogger("flow_kit_cloudbuild.server")


def public_record(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in PUBLIC_FIELDS}


async def notify(listeners: Iterable[TaskListener], event: str, record: dict[str, Any]) -> None:
    """Tell each listener of a written record; one that fails is logged, the write stands."""
    for listener in list(listeners):
        try:
            await listener(event, record)
        except Exception:
            log.exception("a listener of the task store failed on %s task %s", event, record.get("taskId"))


class TaskStore(Protocol):
    """Where task records and messages live. A Redis implementation can replace the file one."""

    #: called after every ``create`` and ``update`` (see "Change events" above)
    listeners: list[TaskListener]

    async def create(self, record: dict[str, Any]) -> None:
        """Store a new task record (``record["taskId"]`` is new)."""

    async def get(self, task_id: str) -> dict[str, Any] | None:
        """The record (with ``lastSeq``), or None for an unknown id."""

    async def get_many(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The records of ``task_ids`` that exist, without ``lastSeq``: what a listing of many
        tasks needs, read in one go (the dashboard's task list)."""

    async def next_number(self, token_hash: str, project: str) -> int:
        """The next build number of ``project`` for ``token_hash``: 1, 2, ... (atomic; kept
        apart from the records, so retention deleting old tasks never reuses a number)."""

    async def update(self, task_id: str, **fields: Any) -> dict[str, Any]:
        """Change some fields of a record and return the new record."""

    async def append(self, task_id: str, action: str, message: str, **extra: Any) -> dict[str, Any]:
        """Make the next message of the task (seq = last + 1), store it and return it."""

    def messages(self, task_id: str, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Stored messages with seq > after_seq, in order."""

    async def unfinished(self) -> list[dict[str, Any]]:
        """Records whose state is not final (used at start-up to close what a restart cut off)."""

    async def close(self, task_id: str | None = None) -> None:
        """Release resources held for one task (or all)."""


class FileTaskStore:
    """Task records and messages as files under ``root``.

    No file is touched on the event loop. Every write (a new record, a record's new version, a
    message, closing a task's log) runs on one writer thread, in the order it was asked for, and
    its caller waits for it: a message is in the file before it is sent, so a restart never
    reuses a seq a client has seen, and seqs are assigned on the loop in the order the writes
    are queued, so the file stays in seq order. Reads (a replay, a record not cached yet, the
    last seq of a log) run in worker threads, a batch at a time.
    """

    def __init__(self, root: Path, listeners: Iterable[TaskListener] = ()) -> None:
        self.root = root
        self.listeners: list[TaskListener] = list(listeners)
        root.mkdir(parents=True, exist_ok=True)
        self._seq: dict[str, int] = {}
        self._files: dict[str, IO[str]] = {}  # open logs; used on the writer thread only
        self._records: dict[str, dict[str, Any]] = {}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cloudbuild-store")

    def _dir(self, task_id: str) -> Path:
        if not is_id(task_id):
            raise KeyError(task_id)
        return self.root / task_id

    async def _write_op(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the writer thread, after every write queued before it."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def create(self, record: dict[str, Any]) -> None:
        record = dict(record)
        await self._write_op(self._create_files, record["taskId"], _record_bytes(record))
        self._records[record["taskId"]] = record
        self._seq[record["taskId"]] = 0
        await notify(self.listeners, CREATED, {**record, "lastSeq": 0})

    async def next_number(self, token_hash: str, project: str) -> int:
        # on the writer thread: numbers are handed out in the order asked, one at a time
        return await self._write_op(self._bump_number, token_hash, project)

    def _bump_number(self, token_hash: str, project: str) -> int:
        """``<root>/.numbers/<sha256(token hash, project)>``: the last number given (text)."""
        scope = hashlib.sha256(f"{token_hash}\0{project}".encode()).hexdigest()
        path = self.root / ".numbers" / scope
        try:
            last = int(path.read_text(encoding="ascii").strip() or 0)
        except (OSError, ValueError):
            last = 0
        path.parent.mkdir(exist_ok=True)
        atomic_write_bytes(path, f"{last + 1}\n".encode())
        return last + 1

    def _create_files(self, task_id: str, body: bytes) -> None:
        d = self._dir(task_id)
        d.mkdir(parents=True, exist_ok=False)
        (d / "messages.jsonl").touch()
        atomic_write_bytes(d / "task.json", body)

    def _write_record(self, task_id: str, body: bytes) -> None:
        atomic_write_bytes(self._dir(task_id) / "task.json", body)

    async def _load(self, task_id: str) -> dict[str, Any] | None:
        record = self._records.get(task_id)
        if record is not None:
            return record
        loaded = await asyncio.to_thread(self._read_record, task_id)
        if loaded is None:
            return None
        return self._records.setdefault(task_id, loaded)  # another look may have been quicker

    def _read_record(self, task_id: str) -> dict[str, Any] | None:
        try:
            path = self._dir(task_id) / "task.json"
            return json.loads(path.read_text(encoding="utf-8"))
        except (KeyError, OSError, ValueError):
            return None

    async def _last_seq(self, task_id: str) -> int:
        seq = self._seq.get(task_id)
        if seq is not None:
            return seq
        found = await asyncio.to_thread(self._scan_last_seq, task_id)
        return self._seq.setdefault(task_id, found)  # an append meanwhile went on from the cache

    def _scan_last_seq(self, task_id: str) -> int:
        last = 0
        try:
            f = open(self._dir(task_id) / "messages.jsonl", encoding="utf-8")
        except (KeyError, OSError):
            return 0
        with f:  # a finished task's 20 MB log is looked at on every attach: parse no line
            for line in f:  # a line that ends in a newline was written whole
                head = _SEQ_RE.match(line) if line.endswith("\n") else None
                if head is not None:
                    last = int(head.group(1))
                    continue
                try:
                    last = json.loads(line)["meta"]["seq"]
                except (ValueError, KeyError, TypeError):
                    break  # a line cut off by a crash: the last one
        return last

    async def get(self, task_id: str) -> dict[str, Any] | None:
        record = await self._load(task_id)
        if record is None:
            return None
        return {**record, "lastSeq": await self._last_seq(task_id)}

    async def get_many(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        found = {t: r for t in task_ids if (r := self._records.get(t)) is not None}
        missing = [t for t in task_ids if t not in found]

        def read() -> dict[str, dict[str, Any]]:
            return {t: r for t in missing if (r := self._read_record(t)) is not None}

        # the records this process holds, then the rest from disk: a page of a few in place,
        # a long one off the event loop
        found.update(await asyncio.to_thread(read) if len(missing) > 20 else read())
        return found

    async def update(self, task_id: str, **fields: Any) -> dict[str, Any]:
        record = await self._load(task_id)
        if record is None:
            raise KeyError(task_id)
        record.update(fields)
        await self._write_op(self._write_record, task_id, _record_bytes(record))
        stored = {**record, "lastSeq": await self._last_seq(task_id)}
        await notify(self.listeners, UPDATED, stored)
        return stored

    async def append(self, task_id: str, action: str, message: str, **extra: Any) -> dict[str, Any]:
        seq = await self._last_seq(task_id) + 1
        msg = protocol.make_message(task_id, seq, action, message, **extra)
        self._seq[task_id] = seq  # the next append goes on from here, even before this one is written
        try:
            await self._write_op(self._write_message, task_id, msg)
        except BaseException:
            if self._seq.get(task_id) == seq:
                self._seq[task_id] = seq - 1
            raise
        return msg

    def _write_message(self, task_id: str, msg: dict[str, Any]) -> None:
        fh = self._files.get(task_id)
        if fh is None:
            path = self._dir(task_id) / "messages.jsonl"
            _drop_partial_line(path)
            fh = self._files[task_id] = open(path, "a", encoding="utf-8")
        fh.write(json.dumps(msg, ensure_ascii=False, separators=(",", ":")) + "\n")
        fh.flush()

    def _read_batch(self, task_id: str, pos: int, after_seq: int) -> tuple[list[dict[str, Any]], int, bool]:
        """(messages after ``after_seq`` from byte ``pos`` on, the next pos, whether the log ended)."""
        try:
            f = open(self._dir(task_id) / "messages.jsonl", "rb")
        except (KeyError, OSError):
            return [], pos, True
        size = READ_BATCH_BYTES
        with f:
            while True:
                f.seek(pos)
                data = f.read(size)
                cut = data.rfind(b"\n") + 1
                if cut or len(data) < size:
                    break
                size *= 2  # one message longer than a batch
        ended = len(data) < size
        if ended:  # to the end of the file, with a last line still lacking its newline, if any
            cut = len(data)
        lines = data[:cut].split(b"\n")
        if not lines[-1]:
            lines.pop()
        out: list[dict[str, Any]] = []
        for line in lines:
            if after_seq:  # a replay from a seq: skip earlier lines without parsing them
                head = _SEQ_RE_BYTES.match(line)
                if head is not None and int(head.group(1)) <= after_seq:
                    continue
            try:
                msg = json.loads(line)
            except ValueError:  # a line cut off by a crash: the last one, never mid-file
                return out, pos + cut, True
            if msg["meta"]["seq"] > after_seq:
                out.append(msg)
        return out, pos + cut, ended

    async def messages(self, task_id: str, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        pos, ended = 0, False
        while not ended:
            batch, pos, ended = await asyncio.to_thread(self._read_batch, task_id, pos, after_seq)
            for msg in batch:
                yield msg

    async def unfinished(self) -> list[dict[str, Any]]:
        found = []
        for name in sorted(await asyncio.to_thread(os.listdir, self.root)):
            if not is_id(name):
                continue
            record = await self.get(name)
            if record is not None and record.get("state") not in protocol.FINAL:
                found.append(record)
        return found

    async def close(self, task_id: str | None = None) -> None:
        await self._write_op(self._close_files, task_id)
        if task_id is not None:
            self._records.pop(task_id, None)
            self._seq.pop(task_id, None)

    def _close_files(self, task_id: str | None) -> None:
        ids = list(self._files) if task_id is None else [task_id]
        for tid in ids:
            fh = self._files.pop(tid, None)
            if fh is not None:
                fh.close()


def _record_bytes(record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "lastSeq"}
    return json.dumps(body, indent=1).encode("utf-8")


def _drop_partial_line(path: Path) -> None:
    """Cut a last line left half-written by a crash, so new lines start on a line of their own."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            pos = size
            while pos > 0:
                step = min(4096, pos)
                f.seek(pos - step)
                chunk = f.read(step)
                i = chunk.rfind(b"\n")
                if i >= 0:
                    f.truncate(pos - step + i + 1)
                    return
                pos -= step
            f.truncate(0)
    except FileNotFoundError:
        pass
